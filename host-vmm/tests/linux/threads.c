#define _GNU_SOURCE
/* Threads across the virtual server: more threads than VPs, a mutex, a condition
 * variable ping-pong (thousands of hand-overs between threads the scheduler places on
 * different VPs and nodes), a barrier, TLS, malloc/free from every thread, mmap/munmap
 * and mprotect, MADV_DONTNEED of pages another thread wrote, a futex timeout, and the
 * VP count as sysconf sees it. Everything it
 * prints is computed, so a native run prints the same bytes. */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define WORKERS 9
#define ROUNDS 3000

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static pthread_barrier_t barrier;
static long shared_total;
static int turn;
static long handed;
static __thread long tls_value = 7;

static uint64_t mix(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return x;
}

static void *worker(void *arg) {
    long id = (long)arg;
    if (tls_value != 7) return (void *)-1;
    tls_value = id;
    /* malloc and free from every thread at once. */
    uint64_t sum = 0;
    for (int round = 0; round < 50; round++) {
        size_t n = 64 + (size_t)(mix(id * 1000 + round) % 4000);
        unsigned char *p = malloc(n);
        if (!p) return (void *)-2;
        for (size_t i = 0; i < n; i++) p[i] = (unsigned char)(i + id);
        for (size_t i = 0; i < n; i++) sum += p[i];
        free(p);
    }
    /* A private mapping, written, protected read-only, unmapped. */
    size_t len = 3 * 4096;
    unsigned char *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return (void *)-3;
    for (size_t i = 0; i < len; i += 512) m[i] = (unsigned char)id;
    if (mprotect(m, len, PROT_READ) != 0) return (void *)-4;
    for (size_t i = 0; i < len; i += 512) sum += m[i];
    if (munmap(m, len) != 0) return (void *)-5;
    pthread_barrier_wait(&barrier);
    pthread_mutex_lock(&lock);
    shared_total += id;
    pthread_mutex_unlock(&lock);
    if (tls_value != id) return (void *)-6;
    return (void *)(uintptr_t)(sum % 100000);
}

static void *pong(void *arg) {
    (void)arg;
    for (int i = 0; i < ROUNDS; i++) {
        pthread_mutex_lock(&lock);
        while (turn != 1) pthread_cond_wait(&cond, &lock);
        turn = 0;
        handed++;
        pthread_cond_signal(&cond);
        pthread_mutex_unlock(&lock);
    }
    return NULL;
}

#define DISCARD_PAGES 64
static unsigned char *discard_area;

static void *fill_pages(void *arg) {
    (void)arg;
    for (size_t i = 0; i < DISCARD_PAGES * 4096; i++) discard_area[i] = (unsigned char)(i * 7 + 1);
    return NULL;
}

/* Counts the pages of the area that are all zero. */
static void *count_zero_pages(void *arg) {
    long zero = 0;
    for (size_t p = 0; p < DISCARD_PAGES; p++) {
        int all = 1;
        for (size_t i = 0; i < 4096; i++) all &= discard_area[p * 4096 + i] == 0;
        zero += all;
    }
    *(long *)arg = zero;
    return NULL;
}

int main(void) {
    pthread_t t[WORKERS];
    pthread_barrier_init(&barrier, NULL, WORKERS);
    for (long i = 0; i < WORKERS; i++)
        if (pthread_create(&t[i], NULL, worker, (void *)i) != 0) return 10;
    for (int i = 0; i < WORKERS; i++) {
        void *r;
        pthread_join(t[i], &r);
        printf("worker %d: %ld\n", i, (long)r);
    }
    printf("total %ld, main tls %ld\n", shared_total, tls_value);

    pthread_t p;
    if (pthread_create(&p, NULL, pong, NULL) != 0) return 11;
    for (int i = 0; i < ROUNDS; i++) {
        pthread_mutex_lock(&lock);
        while (turn != 0) pthread_cond_wait(&cond, &lock);
        turn = 1;
        handed++;
        pthread_cond_signal(&cond);
        pthread_mutex_unlock(&lock);
    }
    pthread_join(p, NULL);
    printf("handed over %ld times\n", handed);

    /* A timed wait that nobody signals ends with ETIMEDOUT after its deadline. */
    struct timespec start, deadline, end;
    clock_gettime(CLOCK_MONOTONIC, &start);
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_nsec += 20 * 1000 * 1000;
    if (deadline.tv_nsec >= 1000000000) { deadline.tv_sec++; deadline.tv_nsec -= 1000000000; }
    pthread_mutex_lock(&lock);
    int rc = pthread_cond_timedwait(&cond, &lock, &deadline);
    pthread_mutex_unlock(&lock);
    clock_gettime(CLOCK_MONOTONIC, &end);
    long waited_ms = (end.tv_sec - start.tv_sec) * 1000 + (end.tv_nsec - start.tv_nsec) / 1000000;
    printf("timedwait %s, waited >= 19 ms: %d\n", rc == ETIMEDOUT ? "ETIMEDOUT" : strerror(rc),
           waited_ms >= 19);

    /* MADV_DONTNEED zeroes pages another thread (maybe on another node) wrote, and only
     * those: a third thread sees 48 zero pages and the rest as written. */
    discard_area = mmap(NULL, DISCARD_PAGES * 4096, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    pthread_t filler, counter;
    long zero_pages = -1;
    pthread_create(&filler, NULL, fill_pages, NULL);
    pthread_join(filler, NULL);
    int advised = madvise(discard_area + 8 * 4096, 48 * 4096, MADV_DONTNEED);
    pthread_create(&counter, NULL, count_zero_pages, &zero_pages);
    pthread_join(counter, NULL);
    printf("madvise %d: %ld zero pages, first and last bytes %d %d\n", advised, zero_pages,
           discard_area[0], discard_area[DISCARD_PAGES * 4096 - 1]);

    cpu_set_t set;
    sched_getaffinity(0, sizeof set, &set);
    printf("online VPs match the affinity mask: %d\n",
           sysconf(_SC_NPROCESSORS_ONLN) == CPU_COUNT(&set));
    return 0;
}
