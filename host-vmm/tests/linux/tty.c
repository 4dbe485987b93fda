/* The terminal as a program sees it: isatty of the three streams, the termios of stdin
 * (canonical mode), the window size of stdout, and a switch to raw mode and back that
 * reads as applied. Run on a pseudo-terminal (and on pipes) by the test, natively and
 * inside the virtual server, with the same output expected. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

int main(void) {
    printf("isatty %d %d %d\n", isatty(0), isatty(1), isatty(2));
    struct termios t, raw, back;
    if (tcgetattr(0, &t) != 0) {
        printf("tcgetattr: %s\n", strerror(errno));
        return 0;
    }
    printf("canonical %d, echo %d\n", (t.c_lflag & ICANON) != 0, (t.c_lflag & ECHO) != 0);
    struct winsize ws;
    if (ioctl(1, TIOCGWINSZ, &ws) == 0) printf("window %d x %d\n", ws.ws_row, ws.ws_col);
    raw = t;
    cfmakeraw(&raw);
    int set = tcsetattr(0, TCSANOW, &raw);
    tcgetattr(0, &back);
    int was_raw = (back.c_lflag & ICANON) == 0;
    tcsetattr(0, TCSANOW, &t);
    tcgetattr(0, &back);
    printf("raw mode set %d, read back raw %d, restored canonical %d\n", set, was_raw,
           (back.c_lflag & ICANON) != 0);
    return 0;
}
