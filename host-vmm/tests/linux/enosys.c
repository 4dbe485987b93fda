/* System calls the guest kernel does not implement: each must fail with ENOSYS (and
 * be counted in --stats-json by number and name). */
#include <errno.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(void) {
    long r = syscall(SYS_memfd_create, "x", 0);
    printf("memfd_create %ld errno %d\n", r, errno);
    errno = 0;
    r = syscall(1000, 1, 2, 3);
    printf("syscall 1000 %ld errno %d\n", r, errno);
    errno = 0;
    r = syscall(SYS_memfd_create, "y", 0);
    printf("memfd_create %ld errno %d\n", r, errno);
    return 0;
}
