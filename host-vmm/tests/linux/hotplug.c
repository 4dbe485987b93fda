/* Threads that keep working while VPs leave and come back (cvmm's PUT /v1/vps).
 *
 * Each worker repeats one fixed unit of work until standard input ends: it hashes its
 * own buffer (the same value every round, so a round that sees a torn or lost page
 * counts a mismatch), adds to a counter shared under a mutex and to its own, hands a
 * token round a condition variable, sleeps a little (deadlines on the timer lists that
 * leaving VPs hand on) and yields. At the end it prints what does not depend on how many
 * rounds ran: the unit's checksum, the mismatches, and whether the shared counter equals
 * the sum of the workers' own counts (no write lost). So a native run prints the same
 * bytes however long it ran. */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define WORKERS 6
#define WORDS 4096

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static volatile int stop;
static long shared_count;
static int token;
static uint64_t unit_sum[WORKERS];
static long own_count[WORKERS];
static long mismatches[WORKERS];

static uint64_t mix(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    return x ^ (x >> 33);
}

static uint64_t unit(uint64_t *buf, int id) {
    for (int i = 0; i < WORDS; i++)
        buf[i] = mix((uint64_t)id * WORDS + i);
    uint64_t sum = 0;
    for (int i = 0; i < WORDS; i++)
        sum = mix(sum ^ buf[(i * 7) % WORDS]);
    return sum;
}

static void *worker(void *arg) {
    int id = (int)(intptr_t)arg;
    uint64_t *buf = malloc(WORDS * sizeof *buf);
    if (!buf)
        abort();
    unit_sum[id] = unit(buf, id);
    long rounds = 0;
    do {
        if (unit(buf, id) != unit_sum[id])
            mismatches[id]++;
        pthread_mutex_lock(&lock);
        shared_count++;
        own_count[id]++;
        /* Hand the token on when it is ours; never wait for it (stop must end us). */
        if (token == id) {
            token = (id + 1) % WORKERS;
            pthread_cond_broadcast(&cond);
        }
        pthread_mutex_unlock(&lock);
        if (++rounds % 4 == 0) {
            struct timespec nap = {0, 200 * 1000};
            nanosleep(&nap, NULL);
        }
        sched_yield();
    } while (!stop || rounds < 2);
    free(buf);
    return NULL;
}

int main(void) {
    pthread_t threads[WORKERS];
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    for (int i = 0; i < WORKERS; i++)
        if (pthread_create(&threads[i], &attr, worker, (void *)(intptr_t)i) != 0) {
            perror("pthread_create");
            return 1;
        }
    char sink[256];
    while (read(0, sink, sizeof sink) > 0) {
    }
    stop = 1;
    for (int i = 0; i < WORKERS; i++)
        pthread_join(threads[i], NULL);
    uint64_t checksum = 0;
    long own_total = 0, bad = 0;
    for (int i = 0; i < WORKERS; i++) {
        checksum = mix(checksum ^ unit_sum[i]);
        own_total += own_count[i];
        bad += mismatches[i];
    }
    printf("workers %d checksum %016llx mismatches %ld lost %ld\n", WORKERS,
           (unsigned long long)checksum, bad, own_total - shared_count);
    return 0;
}
