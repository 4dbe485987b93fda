/* Writes through a null pointer: the trampoline page at virtual 0 is read-only, so this
 * must fault and never print. */
#include <stdio.h>
int main(void) {
    volatile int *p = 0;
    *p = 1;
    puts("survived a null write");
    return 0;
}
