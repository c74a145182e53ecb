/* A tiny program whose memory accesses Valgrind's Lackey traced into lackey.trace.gz
 * (valgrind 3.19, gcc 12, x86-64):
 *   gcc -O1 -static -o lackey_prog lackey_prog.c
 *   valgrind --tool=lackey --trace-mem=yes --log-file=lackey.trace ./lackey_prog
 *   gzip -9 -n lackey.trace
 * Static, so the trace is the program and the C library's start-up, without the
 * dynamic loader. Its own data shows each kind of first touch: pages read and later
 * written, pages only written, pages only read, pages whose first touch is a
 * read-modify-write (M), and one 8-byte store across a page boundary. */
#include <string.h>

#define PAGE 4096
static char table[6 * PAGE] __attribute__((aligned(PAGE)));    /* read, then written */
static char output[4 * PAGE] __attribute__((aligned(PAGE)));   /* written only */
static char counts[3 * PAGE] __attribute__((aligned(PAGE)));   /* read-modify-write (M) */
static const char text[2 * PAGE] __attribute__((aligned(PAGE))) = "read only data";

int main(void)
{
    volatile long sum = 0;
    for (int i = 0; i < (int)sizeof table; i += 512)
        sum += table[i];
    for (int i = 0; i < (int)sizeof table; i += 1024)
        table[i] = (char)i;
    for (int i = 0; i < (int)sizeof output; i += 256)
        output[i] = (char)sum;
    for (int i = 0; i < (int)sizeof counts; i += 128)
        counts[i]++;
    for (int i = 0; i < (int)sizeof text; i += 64)
        sum += text[i];
    long v = sum;
    memcpy(output + PAGE - 4, &v, sizeof v);   /* an 8-byte store across two pages */
    return (int)(sum & 1) + output[5] + counts[PAGE];
}
