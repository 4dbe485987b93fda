/* Signal handlers: SIGSEGV and SIGFPE handlers that read siginfo and siglongjmp out,
 * raise() to a handler (musl blocks the signal around its tkill, so it arrives as a
 * pending signal when unblocked), a handler on an alternate stack, and SIG_IGN. */
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
static sigjmp_buf env;
static volatile void *seen_addr;
static volatile int seen_sig, seen_code, usr1;
static void on_fault(int sig, siginfo_t *info, void *uc) {
    (void)uc;
    seen_sig = sig; seen_addr = info->si_addr; seen_code = info->si_code;
    siglongjmp(env, 1);
}
static void on_usr1(int sig) { usr1 += sig; }
static int divide_by(volatile int d) { return 100 / d; }
int main(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGSEGV, &sa, NULL);
    sigaction(SIGFPE, &sa, NULL);
    for (int i = 0; i < 3; i++) {
        if (sigsetjmp(env, 1) == 0) {
            *(volatile int *)(long)(16 * i) = 1;
            puts("no fault?");
        } else {
            printf("SIGSEGV %d at %p code %d\n", seen_sig, (void *)seen_addr, seen_code);
        }
    }
    if (sigsetjmp(env, 1) == 0) {
        printf("%d\n", divide_by(0));
    } else {
        printf("SIGFPE %d code %d\n", seen_sig, seen_code);
    }
    signal(SIGUSR1, on_usr1);
    raise(SIGUSR1);
    raise(SIGUSR1);
    printf("usr1 handled: %d\n", usr1);
    /* An alternate stack: the handler runs there. */
    stack_t ss = { .ss_sp = malloc(65536), .ss_size = 65536, .ss_flags = 0 };
    sigaltstack(&ss, NULL);
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigaction(SIGSEGV, &sa, NULL);
    if (sigsetjmp(env, 1) == 0) *(volatile int *)8 = 1;
    printf("on the alternate stack: SIGSEGV at %p\n", (void *)seen_addr);
    signal(SIGUSR1, SIG_IGN);
    raise(SIGUSR1);
    puts("ignored SIGUSR1");
    return 0;
}
