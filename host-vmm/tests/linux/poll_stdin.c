/* poll on stdin with the timeout of argv[1] ms: what it returns and the events, then
 * what a read gets. The test runs it with a pipe that stays empty and open (the poll
 * times out) and with input that is already there (readable at once). */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv) {
    struct pollfd p = {.fd = 0, .events = POLLIN};
    int n = poll(&p, 1, argc > 1 ? atoi(argv[1]) : 0);
    printf("poll %d, readable %d\n", n, (p.revents & POLLIN) != 0);
    if (n > 0) {
        char buf[16];
        ssize_t got = read(0, buf, sizeof buf);
        printf("read %zd\n", got);
    }
    return 0;
}
