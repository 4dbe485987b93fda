/* A hostile program: it scribbles over all of its own writable memory (data, bss, the
 * heap and a large mapping), then makes thousands of system calls with random numbers
 * and random arguments, with no libc left to lean on. Calls that would rightly block
 * for ever on Linux too (waits, reads of stdin, sleeps, pause) are skipped, so it must
 * end, by a signal or an exit, and the VMM must come through unharmed. */
#include <stdint.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

extern char __data_start, _end;

static uint64_t state;

static uint64_t next(void) {
    state += 0x9e3779b97f4a7c15ull;
    uint64_t z = state;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static long raw(long n, long a, long b, long c, long d, long e, long f) {
    long ret;
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return ret;
}

static int blocks(long n) {
    switch (n) {
    case SYS_read: case SYS_readv: case SYS_pread64: case SYS_preadv:
    case SYS_futex: case SYS_nanosleep: case SYS_clock_nanosleep: case SYS_pause:
    case SYS_poll: case SYS_ppoll: case SYS_select: case SYS_pselect6:
    case SYS_wait4: case SYS_waitid: case SYS_rt_sigsuspend: case SYS_rt_sigtimedwait:
    case SYS_epoll_wait: case SYS_epoll_pwait: case SYS_accept: case SYS_accept4:
    case SYS_recvfrom: case SYS_recvmsg: case SYS_msgrcv: case SYS_semop:
    case SYS_vfork: case SYS_fork: case SYS_clone: case SYS_clone3:
    case SYS_rt_sigreturn: case SYS_write: case SYS_writev: case SYS_pwrite64:
        return 1;
    }
    return 0;
}

int main(int argc, char **argv) {
    state = (uint64_t)(argc > 1 ? argv[1][0] : 7) * 1000003u;
    uint64_t seed = state;
    /* A big mapping to trash, and the heap. */
    uint64_t *map = (uint64_t *)raw(SYS_mmap, 0, 1 << 22, PROT_READ | PROT_WRITE,
                                    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if ((long)map > 0)
        for (long i = 0; i < (1 << 22) / 8; i++) map[i] = next();
    char *heap = (char *)raw(SYS_brk, 0, 0, 0, 0, 0, 0);
    char *top = (char *)raw(SYS_brk, (long)(heap + (1 << 20)), 0, 0, 0, 0, 0);
    for (char *p = heap; p < top; p++) *p = (char)next();
    /* Everything libc keeps: data and bss (the stack and the code stay). */
    uint64_t keep = state;
    for (char *p = &__data_start; p < &_end; p++) *p = (char)next();
    state = keep ^ seed;
    for (int i = 0; i < 20000; i++) {
        long n = (long)(next() % 460);
        if (blocks(n)) continue;
        long a[6];
        for (int k = 0; k < 6; k++) {
            uint64_t r = next();
            switch (r % 4) {
            case 0: a[k] = (long)(r >> 40); break;            /* small numbers */
            case 1: a[k] = (long)((long)map + (long)(r % (1 << 22))); break; /* our memory */
            case 2: a[k] = (long)r; break;                    /* anything */
            default: a[k] = -(long)(r % 4096); break;         /* negative, like errors */
            }
        }
        raw(n, a[0], a[1], a[2], a[3], a[4], a[5]);
    }
    raw(SYS_exit_group, 3, 0, 0, 0, 0, 0);
    return 0;
}
