/* cvmm bench linux: one measurement per run, the same binary natively and inside the
 * virtual server. Prints one line:
 *   RESULT mode=M ops=N median_ns=X p99_ns=Y wall_ns=W
 * where X and Y are per-operation times over batches (each batch's mean), W the whole.
 * Modes:
 *   getpid N          the null system call (syscall(SYS_getpid), never cached)
 *   spawn N           pthread_create + pthread_join of a thread that returns at once
 *   pingpong N        two threads hand a futex word back and forth N times (one round
 *                     trip = two hand-overs)
 *   compute T WORK [PASSES]
 *                     T threads each sum WORK pages of their own memory PASSES times
 *                     (16 if not given); the
 *                     time from the first thread's start to the last one's end is the
 *                     result (the speed-up over VPs and nodes)
 *   phases T PAGES ROUNDS
 *                     T threads each write every word of PAGES pages of their own
 *                     memory, then meet at a barrier, ROUNDS times: a thread that waits
 *                     at the barrier may wake on another VP, and on another node it
 *                     writes its pages there (the placement measurement) */
#define _GNU_SOURCE
#include <linux/futex.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define BATCHES 64

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void report(const char *mode, long ops, double *per_op, int n, uint64_t wall) {
    qsort(per_op, n, sizeof per_op[0], cmp);
    int p99 = (n * 99 + 99) / 100 - 1;
    if (p99 >= n) p99 = n - 1;
    printf("RESULT mode=%s ops=%ld median_ns=%.1f p99_ns=%.1f wall_ns=%llu\n", mode, ops,
           per_op[n / 2], per_op[p99], (unsigned long long)wall);
}

static void *nothing(void *arg) { return arg; }

static volatile uint32_t word;

static long futex(volatile uint32_t *w, int op, uint32_t val) {
    return syscall(SYS_futex, w, op, val, NULL, NULL, 0);
}

static long rounds;

static void *ponger(void *arg) {
    (void)arg;
    for (long i = 0; i < rounds; i++) {
        while (__atomic_load_n(&word, __ATOMIC_ACQUIRE) != 1) futex(&word, FUTEX_WAIT_PRIVATE, 0);
        __atomic_store_n(&word, 0, __ATOMIC_RELEASE);
        futex(&word, FUTEX_WAKE_PRIVATE, 1);
    }
    return NULL;
}

struct work {
    long pages;
    long passes;
    uint64_t sum;
    uint64_t start, end;
};

static pthread_barrier_t start_line;

static void *compute(void *arg) {
    struct work *w = arg;
    size_t bytes = (size_t)w->pages * 4096;
    uint64_t *mem = malloc(bytes);
    for (size_t i = 0; i < bytes / 8; i++) mem[i] = i * 2654435761u;
    pthread_barrier_wait(&start_line);
    w->start = now_ns();
    uint64_t sum = 0;
    for (long pass = 0; pass < w->passes; pass++)
        for (size_t i = 0; i < bytes / 8; i++) sum += mem[i] ^ (uint64_t)pass;
    w->sum = sum;
    w->end = now_ns();
    free(mem);
    return NULL;
}

struct phase_work {
    long pages;
    long rounds;
    uint64_t sum;
};

static pthread_barrier_t phase_line;

static void *phases(void *arg) {
    struct phase_work *w = arg;
    size_t words = (size_t)w->pages * 512;
    uint64_t *mem = malloc(words * 8);
    for (size_t i = 0; i < words; i++) mem[i] = i;
    pthread_barrier_wait(&phase_line);
    for (long round = 0; round < w->rounds; round++) {
        for (size_t i = 0; i < words; i++) mem[i] += (uint64_t)round ^ i;
        pthread_barrier_wait(&phase_line);
    }
    uint64_t sum = 0;
    for (size_t i = 0; i < words; i++) sum += mem[i];
    w->sum = sum;
    free(mem);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s getpid|spawn|pingpong N | compute THREADS PAGES [PASSES] | phases THREADS PAGES ROUNDS\n", argv[0]);
        return 2;
    }
    const char *mode = argv[1];
    long n = atol(argv[2]);
    double per_op[BATCHES];
    long batch = n / BATCHES > 0 ? n / BATCHES : 1;
    uint64_t start = now_ns();
    if (!strcmp(mode, "getpid")) {
        for (int b = 0; b < BATCHES; b++) {
            uint64_t t0 = now_ns();
            for (long i = 0; i < batch; i++) syscall(SYS_getpid);
            per_op[b] = (double)(now_ns() - t0) / (double)batch;
        }
    } else if (!strcmp(mode, "spawn")) {
        for (int b = 0; b < BATCHES; b++) {
            uint64_t t0 = now_ns();
            for (long i = 0; i < batch; i++) {
                pthread_t t;
                pthread_create(&t, NULL, nothing, NULL);
                pthread_join(t, NULL);
            }
            per_op[b] = (double)(now_ns() - t0) / (double)batch;
        }
    } else if (!strcmp(mode, "pingpong")) {
        rounds = batch * BATCHES;
        pthread_t t;
        pthread_create(&t, NULL, ponger, NULL);
        for (int b = 0; b < BATCHES; b++) {
            uint64_t t0 = now_ns();
            for (long i = 0; i < batch; i++) {
                __atomic_store_n(&word, 1, __ATOMIC_RELEASE);
                futex(&word, FUTEX_WAKE_PRIVATE, 1);
                while (__atomic_load_n(&word, __ATOMIC_ACQUIRE) != 0)
                    futex(&word, FUTEX_WAIT_PRIVATE, 1);
            }
            per_op[b] = (double)(now_ns() - t0) / (double)batch;
        }
        pthread_join(t, NULL);
    } else if (!strcmp(mode, "compute") && argc >= 4) {
        long threads = n;
        long pages = atol(argv[3]);
        long passes = argc >= 5 ? atol(argv[4]) : 16;
        if (passes < 1) return 2;
        pthread_t t[64];
        struct work w[64];
        if (threads < 1 || threads > 64) return 2;
        pthread_barrier_init(&start_line, NULL, (unsigned)threads + 1);
        for (long i = 0; i < threads; i++) {
            w[i].pages = pages;
            w[i].passes = passes;
            pthread_create(&t[i], NULL, compute, &w[i]);
        }
        pthread_barrier_wait(&start_line);
        uint64_t total = 0, first = UINT64_MAX, last = 0;
        for (long i = 0; i < threads; i++) {
            pthread_join(t[i], NULL);
            total += w[i].sum;
            if (w[i].start < first) first = w[i].start;
            if (w[i].end > last) last = w[i].end;
        }
        /* From the first thread's start to the last one's end. */
        uint64_t wall = last - first;
        for (int b = 0; b < BATCHES; b++) per_op[b] = (double)wall;
        printf("checksum %llu\n", (unsigned long long)total);
        report(mode, threads * pages * passes, per_op, BATCHES, wall);
        return 0;
    } else if (!strcmp(mode, "phases") && argc >= 5) {
        long threads = n;
        long pages = atol(argv[3]);
        long rounds = atol(argv[4]);
        pthread_t t[64];
        struct phase_work w[64];
        if (threads < 1 || threads > 64 || pages < 1 || rounds < 1) return 2;
        pthread_barrier_init(&phase_line, NULL, (unsigned)threads + 1);
        for (long i = 0; i < threads; i++) {
            w[i].pages = pages;
            w[i].rounds = rounds;
            pthread_create(&t[i], NULL, phases, &w[i]);
        }
        pthread_barrier_wait(&phase_line);
        uint64_t t0 = now_ns();
        for (long r = 0; r < rounds; r++) pthread_barrier_wait(&phase_line);
        uint64_t wall = now_ns() - t0;
        uint64_t total = 0;
        for (long i = 0; i < threads; i++) {
            pthread_join(t[i], NULL);
            total += w[i].sum;
        }
        for (int b = 0; b < BATCHES; b++) per_op[b] = (double)wall / (double)(threads * pages * rounds);
        printf("checksum %llu\n", (unsigned long long)total);
        report(mode, threads * pages * rounds, per_op, BATCHES, wall);
        return 0;
    } else {
        fprintf(stderr, "unknown mode %s\n", mode);
        return 2;
    }
    report(mode, batch * BATCHES, per_op, BATCHES, now_ns() - start);
    return 0;
}
