/* Signals between threads: pthread_kill to a thread spinning in program code (the
 * signal comes in through the interrupt that the IPI brings) and to a thread asleep in
 * pthread_cond_wait (its futex wait ends early, the handler runs, the wait goes on).
 * Each handler records which thread it ran in. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

static volatile sig_atomic_t stop_spinning, usr2_count;
static pthread_t spinner_id, sleeper_id;
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

static void *spinner(void *arg) {
    (void)arg;
    unsigned long spins = 0;
    while (!stop_spinning) spins++;
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
    nanosleep(&pause, NULL);
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
    return 0;
}
