/* Faults a program does not handle, one per argument: each must end the program with
 * the status Linux gives (128 + the signal), as the test checks against a native run. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv) {
    volatile int zero = argc - 2;
    if (argc < 2) return 2;
    const char *what = argv[1];
    if (!strcmp(what, "null")) *(volatile int *)0 = 1;                    /* SIGSEGV */
    if (!strcmp(what, "wild")) *(volatile long *)0x7fff00000000ULL = 1;   /* SIGSEGV */
    if (!strcmp(what, "div")) printf("%d\n", 10 / zero);                  /* SIGFPE */
    if (!strcmp(what, "ud2")) __asm__ volatile("ud2");                    /* SIGILL */
    if (!strcmp(what, "int3")) __asm__ volatile("int3");                  /* SIGTRAP */
    if (!strcmp(what, "abort")) abort();                                  /* SIGABRT */
    /* A stack pointer outside memory: the CPU cannot push the exception frame. */
    if (!strcmp(what, "stack")) __asm__ volatile("mov $0x7fff00000000, %rsp; push %rax");
    if (!strcmp(what, "alarm")) {                                         /* SIGALRM */
        alarm(1);
        pause();
    }
    if (!strcmp(what, "sigpipe")) {                                       /* SIGPIPE */
        int p[2];
        pipe(p);
        close(p[0]);
        write(p[1], "x", 1);
    }
    printf("%s survived\n", what);
    return 0;
}
