/* The real-time interval timer: alarm's return values, an interval timer whose SIGALRM
 * ends pause() three times, getitimer while armed and after, and a sleep that SIGALRM
 * cuts short. Everything printed is computed, so a native run prints the same. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t alarms;

static void on_alarm(int sig) {
    (void)sig;
    alarms++;
}

int main(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sigaction(SIGALRM, &sa, NULL);

    unsigned first = alarm(5);
    unsigned left = alarm(0);
    printf("alarm: %u then %u left\n", first, left);

    struct itimerval every = {{0, 30000}, {0, 30000}}, now, off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &every, NULL);
    /* An alarm may also come between two pauses (a slow VP): count how each pause ended,
     * not how many there were. */
    int eintr = 0, other = 0;
    while (alarms < 3) {
        if (pause() == -1 && errno == EINTR)
            eintr++;
        else
            other++;
    }
    setitimer(ITIMER_REAL, &off, &now);
    /* A slow VP may take one more alarm before the timer is disarmed. */
    int counted = alarms;
    printf("interval timer: 3 alarms or more %d, every pause ended with EINTR %d, interval was "
           "%ld us\n",
           counted >= 3, eintr > 0 && other == 0, (long)now.it_interval.tv_usec);
    getitimer(ITIMER_REAL, &now);
    printf("after disarming: %ld s %ld us left\n", (long)now.it_value.tv_sec,
           (long)now.it_value.tv_usec);

    struct itimerval once = {{0, 0}, {10, 0}};
    setitimer(ITIMER_REAL, &once, NULL);
    getitimer(ITIMER_REAL, &now);
    printf("armed for 10 s: 9 s or more left %d, under 10 s %d\n", now.it_value.tv_sec >= 9,
           now.it_value.tv_sec < 10 || (now.it_value.tv_sec == 10 && now.it_value.tv_usec == 0));
    setitimer(ITIMER_REAL, &off, NULL);

    alarm(1);
    struct timespec nap = {10, 0}, rest = {0, 0};
    int slept = nanosleep(&nap, &rest);
    /* Cut short, whenever the alarm came (a VP of an overloaded host may take seconds
     * to get its tick): at least 1 s of the 10 must be left. */
    printf("a 10 s sleep cut by SIGALRM: %s, 1 s or more left %d, its handler ran %d\n",
           slept == -1 && errno == EINTR ? "EINTR" : "slept", rest.tv_sec >= 1,
           (int)alarms > counted);
    return 0;
}
