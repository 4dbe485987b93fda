/* sched_setaffinity moves the caller, a new thread inherits its mask, and an empty mask
 * is refused. Run with two CPUs natively and two VPs in cvmm, so the numbers agree. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>

static void *where(void *arg) {
    (void)arg;
    for (int i = 0; i < 1000; i++) sched_yield();
    return (void *)(long)sched_getcpu();
}

static int pin(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return sched_setaffinity(0, sizeof set, &set);
}

int main(void) {
    pin(1);
    printf("pinned to 1, runs on %d\n", sched_getcpu());
    pthread_t t;
    void *cpu;
    pthread_create(&t, NULL, where, NULL);
    pthread_join(t, &cpu);
    printf("a new thread inherits the mask: runs on %ld\n", (long)cpu);
    pin(0);
    printf("pinned to 0, runs on %d\n", sched_getcpu());
    cpu_set_t got;
    sched_getaffinity(0, sizeof got, &got);
    printf("the mask reads back: %d CPU(s), CPU 0 %d\n", CPU_COUNT(&got), CPU_ISSET(0, &got));
    cpu_set_t none;
    CPU_ZERO(&none);
    printf("an empty mask: %s\n", sched_setaffinity(0, sizeof none, &none) ? strerror(errno) : "accepted");
    return 0;
}
