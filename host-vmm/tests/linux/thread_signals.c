#define _GNU_SOURCE
/* Signals between threads: pthread_kill to a thread spinning in program code (the
 * signal comes in through the interrupt that the IPI brings) and to a thread asleep in
 * pthread_cond_wait (its futex wait ends early, the handler runs, the wait goes on).
 * A thread in a 10 s nanosleep takes its signal at once: the sleep ends with EINTR
 * and the time left; one in poll with no timeout on an empty pipe too, with EINTR.
 * A read of an empty pipe ends with EINTR under a handler without SA_RESTART, and goes
 * on to read what comes later under one with it. A write to a pipe nobody reads raises
 * SIGPIPE (ignored, then handled) and fails with EPIPE. sigsuspend and ppoll wait under
 * a mask of their own and put the thread's back; sigwait takes a blocked signal without
 * its handler; sigtimedwait times out with EAGAIN.
 * Each handler records which thread it ran in. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t stop_spinning, spinning, usr2_count;
static pthread_t spinner_id, sleeper_id, napper_id;
static volatile sig_atomic_t winch_in_napper, napping, polling;
static pthread_t poller_id;
static int empty_pipe[2];
static volatile int usr1_in_spinner, usr2_in_sleeper;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static int go;

static void on_usr1(int sig) {
    (void)sig;
    usr1_in_spinner = pthread_equal(pthread_self(), spinner_id);
    stop_spinning = 1;
}

static void on_usr2(int sig) {
    (void)sig;
    usr2_in_sleeper = pthread_equal(pthread_self(), sleeper_id);
    usr2_count++;
}

static void on_winch(int sig) {
    (void)sig;
    winch_in_napper = pthread_equal(pthread_self(), napper_id);
}

/* Sleeps 10 s; returns 1 when the sleep ended early with EINTR and 1 to 9 s left. */
static void *napper(void *arg) {
    (void)arg;
    struct timespec nap = {10, 0}, left = {0, 0};
    napping = 1;
    int ret = nanosleep(&nap, &left);
    int ok = ret == -1 && errno == EINTR && left.tv_sec >= 1 && left.tv_sec < 10 &&
             left.tv_nsec >= 0 && left.tv_nsec < 1000000000L;
    return (void *)(long)ok;
}

/* Polls an empty pipe for ever; returns 1 when the poll ended with EINTR. */
static void *poller(void *arg) {
    (void)arg;
    struct pollfd p = {.fd = empty_pipe[0], .events = POLLIN};
    polling = 1;
    int ret = poll(&p, 1, -1);
    return (void *)(long)(ret == -1 && errno == EINTR);
}

static int read_pipe[2], restart_pipe[2];
static volatile sig_atomic_t reading, hup_count, pipe_count;
static pthread_t reader_id;

static void on_hup(int sig) {
    (void)sig;
    hup_count++;
}

static void on_pipe(int sig) {
    (void)sig;
    pipe_count++;
}

/* Reads one byte of `fd`; returns the byte, or -errno. */
static void *reader(void *arg) {
    int fd = (int)(long)arg;
    char c;
    reading = 1;
    ssize_t n = read(fd, &c, 1);
    return (void *)(long)(n == 1 ? c : -errno);
}

static volatile sig_atomic_t quit_count, term_count, suspending;
static pthread_t suspender_id;

static void on_quit(int sig) {
    (void)sig;
    quit_count++;
}

static void on_term(int sig) {
    (void)sig;
    term_count++;
}

/* Blocks SIGQUIT, then waits for it under an empty mask: with sigsuspend (arg 0) or
 * with ppoll on an empty pipe (arg 1). Returns 1 when the wait ended with EINTR after
 * the handler ran and SIGQUIT is blocked again. */
static void *suspender(void *arg) {
    sigset_t block, none, now;
    sigemptyset(&block);
    sigaddset(&block, SIGQUIT);
    pthread_sigmask(SIG_BLOCK, &block, NULL);
    sigemptyset(&none);
    int before = quit_count;
    suspending = 1;
    int ret;
    if (arg == NULL) {
        ret = sigsuspend(&none);
    } else {
        struct pollfd p = {.fd = empty_pipe[0], .events = POLLIN};
        ret = ppoll(&p, 1, NULL, &none);
    }
    int eintr = ret == -1 && errno == EINTR;
    pthread_sigmask(SIG_BLOCK, NULL, &now);
    return (void *)(long)(eintr && quit_count == before + 1 && sigismember(&now, SIGQUIT));
}

/* Blocks SIGTERM and takes it with sigwait: returns the signal's number. */
static void *waiter(void *arg) {
    (void)arg;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    suspending = 1;
    int sig = 0;
    if (sigwait(&set, &sig) != 0) return (void *)-1L;
    return (void *)(long)sig;
}

static void *spinner(void *arg) {
    (void)arg;
    unsigned long spins = 0;
    while (!stop_spinning) {
        spins++;
        spinning = 1;
    }
    return (void *)(long)(spins > 0);
}

static void *sleeper(void *arg) {
    (void)arg;
    pthread_mutex_lock(&lock);
    while (!go) pthread_cond_wait(&cond, &lock);
    pthread_mutex_unlock(&lock);
    return NULL;
}

int main(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    sa.sa_handler = on_usr2;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGUSR2, &sa, NULL);

    pthread_create(&spinner_id, NULL, spinner, NULL);
    pthread_create(&sleeper_id, NULL, sleeper, NULL);
    struct timespec pause = {0, 50 * 1000 * 1000};
    /* Signalled once it spins, however late its VP starts it. */
    while (!spinning) nanosleep(&pause, NULL);
    pthread_kill(spinner_id, SIGUSR1);
    void *spun;
    pthread_join(spinner_id, &spun);
    printf("spinner stopped by its handler: %d, ran in the spinner: %d\n", (int)(long)spun,
           usr1_in_spinner);

    pthread_kill(sleeper_id, SIGUSR2);
    while (!usr2_count) nanosleep(&pause, NULL);
    pthread_mutex_lock(&lock);
    go = 1;
    pthread_cond_signal(&cond);
    pthread_mutex_unlock(&lock);
    pthread_join(sleeper_id, NULL);
    printf("sleeper handled %d signal(s), in the sleeper: %d, then woke normally\n",
           (int)usr2_count, usr2_in_sleeper);

    sa.sa_handler = on_winch;
    sa.sa_flags = SA_RESTART; /* a sleep is never restarted, even so */
    sigaction(SIGWINCH, &sa, NULL);
    pthread_create(&napper_id, NULL, napper, NULL);
    while (!napping) nanosleep(&pause, NULL);
    nanosleep(&pause, NULL);
    pthread_kill(napper_id, SIGWINCH);
    void *early;
    pthread_join(napper_id, &early);
    printf("napper's sleep ended with EINTR and the time left: %d, handler in the napper: %d\n",
           (int)(long)early, winch_in_napper);

    pipe(empty_pipe);
    pthread_create(&poller_id, NULL, poller, NULL);
    while (!polling) nanosleep(&pause, NULL);
    nanosleep(&pause, NULL);
    pthread_kill(poller_id, SIGWINCH);
    void *interrupted;
    pthread_join(poller_id, &interrupted);
    printf("poller's poll ended with EINTR: %d\n", (int)(long)interrupted);

    /* SIGHUP without SA_RESTART: the blocked read ends with EINTR. */
    sa.sa_handler = on_hup;
    sa.sa_flags = 0;
    sigaction(SIGHUP, &sa, NULL);
    pipe(read_pipe);
    reading = 0;
    pthread_create(&reader_id, NULL, reader, (void *)(long)read_pipe[0]);
    while (!reading) nanosleep(&pause, NULL);
    nanosleep(&pause, NULL);
    pthread_kill(reader_id, SIGHUP);
    void *got;
    pthread_join(reader_id, &got);
    printf("read without SA_RESTART: %s, handler ran %d\n",
           (long)got == -EINTR ? "EINTR" : "something else", (int)hup_count);

    /* The same with SA_RESTART: the handler runs, the read goes on and gets the byte. */
    sa.sa_flags = SA_RESTART;
    sigaction(SIGHUP, &sa, NULL);
    pipe(restart_pipe);
    reading = 0;
    pthread_create(&reader_id, NULL, reader, (void *)(long)restart_pipe[0]);
    while (!reading) nanosleep(&pause, NULL);
    nanosleep(&pause, NULL);
    pthread_kill(reader_id, SIGHUP);
    while (hup_count < 2) nanosleep(&pause, NULL);
    write(restart_pipe[1], "r", 1);
    pthread_join(reader_id, &got);
    printf("read with SA_RESTART got '%c' after the handler ran %d times\n", (int)(long)got,
           (int)hup_count);

    /* SIGPIPE: ignored, the write fails with EPIPE; handled, the handler runs too. */
    int dead[2];
    pipe(dead);
    close(dead[0]);
    signal(SIGPIPE, SIG_IGN);
    errno = 0;
    long wrote = write(dead[1], "x", 1);
    printf("write with no reader, SIGPIPE ignored: %ld %s\n", wrote, strerror(errno));
    sa.sa_handler = on_pipe;
    sa.sa_flags = 0;
    sigaction(SIGPIPE, &sa, NULL);
    errno = 0;
    wrote = write(dead[1], "x", 1);
    printf("write with no reader, SIGPIPE handled %d time(s): %ld %s\n", (int)pipe_count,
           wrote, strerror(errno));

    sa.sa_handler = on_quit;
    sa.sa_flags = 0;
    sigaction(SIGQUIT, &sa, NULL);
    for (long how = 0; how < 2; how++) {
        suspending = 0;
        pthread_create(&suspender_id, NULL, suspender, (void *)how);
        while (!suspending) nanosleep(&pause, NULL);
        nanosleep(&pause, NULL);
        pthread_kill(suspender_id, SIGQUIT);
        void *ok;
        pthread_join(suspender_id, &ok);
        printf("%s under its own mask: EINTR after the handler, mask back: %d\n",
               how ? "ppoll" : "sigsuspend", (int)(long)ok);
    }

    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);
    suspending = 0;
    pthread_t waiter_id;
    pthread_create(&waiter_id, NULL, waiter, NULL);
    while (!suspending) nanosleep(&pause, NULL);
    nanosleep(&pause, NULL);
    pthread_kill(waiter_id, SIGTERM);
    void *taken;
    pthread_join(waiter_id, &taken);
    printf("sigwait took signal %d, its handler ran %d times\n", (int)(long)taken,
           (int)term_count);

    sigset_t ttin;
    sigemptyset(&ttin);
    sigaddset(&ttin, SIGTTIN);
    pthread_sigmask(SIG_BLOCK, &ttin, NULL);
    struct timespec short_wait = {0, 30 * 1000 * 1000};
    errno = 0;
    int timed = sigtimedwait(&ttin, NULL, &short_wait);
    printf("sigtimedwait with nothing sent: %d %s\n", timed, strerror(errno));
    return 0;
}
