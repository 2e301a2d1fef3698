/* Reference for ring3-compute.elf: prints the line the guest must print.
 * gcc -O2 -o /tmp/ref tests/guests/ring3-compute-ref.c && /tmp/ref */
#include <stdint.h>
#include <stdio.h>

int main(void)
{
    uint64_t x = 0x9E3779B97F4A7C15ull, acc = 0;
    for (long i = 0; i < 10000000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        acc = acc * 31 + x;
    }
    printf("RESULT=%016llX\n", (unsigned long long)acc);
    return 0;
}
