#ifndef CORE_BODY_BUF_H
#define CORE_BODY_BUF_H

#include <stddef.h>

/*
 * Message bodies. The loop thread allocates one per delivery and a
 * worker frees it, so glibc hands a large body fresh pages each time
 * (it returns the freed ones to the kernel) and the copy out of the
 * broker's frames paid a page fault every 4 KiB: most of the loop's time
 * on 1 MiB bodies. Large buffers are therefore kept for the next body, up
 * to BODY_BUF_KEEP_BYTES in all; small ones go straight to malloc, which
 * serves them well. (16 MiB cut the faults at prefetch 1000 by another
 * two thirds, but the drain rate did not move measurably, so the memory
 * was not worth it.) The loop gives them all back when nothing is in flight at
 * a memory sample, at a pause and after a body large enough to trim for.
 */

/* Largest total kept for reuse. */
#define BODY_BUF_KEEP_BYTES (4u << 20)

/* A buffer of at least len + 1 bytes, or NULL. Any thread. */
char *body_buf_get(size_t len);

/* Gives a body back; NULL is fine. Any thread. */
void body_buf_put(char *body);

/* Bytes kept for reuse now. */
size_t body_buf_kept(void);

/* Frees what is kept, so a trim can return it to the kernel. */
void body_buf_flush(void);

#endif
