/* The Linux ABI a static program meets at start and in its first system calls: argv,
 * envp, auxv, the break, anonymous mappings, time, identity, stdout and stderr, the exit
 * status. Every line it prints is the same natively and inside cvmm, so the test compares
 * the two byte for byte. */
#define _GNU_SOURCE
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

static unsigned checksum(const unsigned char *p, size_t n) {
    unsigned h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 16777619u;
    return h;
}

int main(int argc, char **argv, char **envp) {
    printf("argc %d\n", argc);
    for (int i = 1; i < argc; i++) printf("argv[%d] '%s'\n", i, argv[i]);
    int envc = 0;
    for (char **e = envp; *e; e++, envc++) printf("env '%s'\n", *e);
    printf("envc %d, HOME=%s\n", envc, getenv("HOME") ? getenv("HOME") : "(unset)");

    /* auxv: what the loader must provide. */
    printf("pagesz %lu\n", getauxval(AT_PAGESZ));
    printf("entry is main's image: %d\n", getauxval(AT_ENTRY) != 0);
    printf("phent %lu\n", getauxval(AT_PHENT));
    printf("random present: %d\n", getauxval(AT_RANDOM) != 0);
    printf("execfn '%s'\n", (const char *)getauxval(AT_EXECFN));
    printf("platform '%s'\n", (const char *)getauxval(AT_PLATFORM));
    printf("secure %lu\n", getauxval(AT_SECURE));

    /* malloc: small blocks from the break, big ones from mmap; written and summed. */
    unsigned sum = 0;
    for (int round = 0; round < 50; round++) {
        size_t n = 1000 + round * 40000;
        unsigned char *p = malloc(n);
        for (size_t i = 0; i < n; i++) p[i] = (unsigned char)(i * 7 + round);
        sum ^= checksum(p, n);
        free(p);
    }
    printf("malloc checksum %08x\n", sum);

    /* mmap, munmap of a middle part, mremap. */
    size_t page = 4096;
    unsigned char *m = mmap(NULL, 16 * page, PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) { perror("mmap"); return 1; }
    int zero = 1;
    for (size_t i = 0; i < 16 * page; i++) zero &= m[i] == 0;
    memset(m, 0x5a, 16 * page);
    printf("mmap zeroed %d munmap middle %d\n", zero, munmap(m + 4 * page, 4 * page));
    unsigned char *r = mremap(m, 4 * page, 64 * page, MREMAP_MAYMOVE);
    printf("mremap kept %d\n", r != MAP_FAILED && r[4 * page - 1] == 0x5a && r[0] == 0x5a);
    printf("madvise %d zeroed %d\n", madvise(r, page, MADV_DONTNEED), r[0] == 0);

    /* time: monotonic does not go back; realtime is after 2020. */
    struct timespec a, b, rt;
    clock_gettime(CLOCK_MONOTONIC, &a);
    struct timespec nap = {0, 2000000};
    nanosleep(&nap, NULL);
    clock_gettime(CLOCK_MONOTONIC, &b);
    clock_gettime(CLOCK_REALTIME, &rt);
    long slept = (b.tv_sec - a.tv_sec) * 1000000000L + (b.tv_nsec - a.tv_nsec);
    printf("slept at least 2 ms: %d\n", slept >= 2000000);
    /* CPU time counts running, not sleeping: work until the thread's CPU clock has
     * advanced 30 ms, then sleep 200 ms, over which the clock must move less than 150 ms.
     * Inside cvmm a VP's time includes the host taking its core away (a loaded 2-core
     * machine, a lossy wire's retransmits), so the bound leaves room for that and still
     * tells a counted sleep apart. */
    struct timespec c0, c1, c2, long_nap = {0, 200000000};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c0);
    do {
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c1);
    } while ((c1.tv_sec - c0.tv_sec) * 1000000000L + (c1.tv_nsec - c0.tv_nsec) < 30000000L);
    nanosleep(&long_nap, NULL);
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c2);
    long worked = (c1.tv_sec - c0.tv_sec) * 1000000000L + (c1.tv_nsec - c0.tv_nsec);
    long over_sleep = (c2.tv_sec - c1.tv_sec) * 1000000000L + (c2.tv_nsec - c1.tv_nsec);
    printf("thread CPU time counts the 30 ms of work, not the sleep: %d\n",
           worked >= 30000000L && over_sleep < 150000000L);
    printf("realtime after 2020: %d\n", rt.tv_sec > 1577836800);

    struct utsname u;
    uname(&u);
    printf("uname %s %s\n", u.sysname, u.machine);
    unsigned char rnd[64];
    printf("getrandom %zd\n", getrandom(rnd, sizeof rnd, 0));
    cpu_set_t set;
    printf("affinity ok %d\n", sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) >= 1);
    printf("nprocs matches affinity %d\n", sysconf(_SC_NPROCESSORS_ONLN) == CPU_COUNT(&set));

    /* A long write in pieces and binary bytes. */
    static char big[200000];
    for (size_t i = 0; i < sizeof big; i++) big[i] = (char)(i % 251);
    fflush(stdout);
    printf("wrote %zd\n", write(1, big, sizeof big));
    fprintf(stderr, "to stderr %d\n", 42);
    return argc + 40;
}
