/* Small helpers shared by the tars sources: strict number parsing, growable strings. */
#ifndef TARS_UTIL_H
#define TARS_UTIL_H

#include <stddef.h>

/* Parses the whole of s as a decimal integer into *out. Returns 0, or -1 when s is empty, has
 * trailing characters or overflows long. */
int tars_parse_long(const char *s, long *out);

/* Parses the whole of s as a finite floating-point number into *out. Returns 0, or -1. */
int tars_parse_double(const char *s, double *out);

/* A growable, always NUL-terminated byte string. */
typedef struct {
  char *data;
  size_t len, cap;
} tars_buf;

/* Appends n bytes of s to b. Returns 0, or -1 on allocation failure (b is left valid). */
int tars_buf_add(tars_buf *b, const char *s, size_t n);
/* Appends a NUL-terminated string. Returns 0 or -1 as tars_buf_add. */
int tars_buf_adds(tars_buf *b, const char *s);
/* Appends the UTF-8 encoding of code point cp (0..0x10FFFF). Returns 0, or -1 on a bad code point
 * or allocation failure. */
int tars_buf_add_utf8(tars_buf *b, unsigned long cp);
/* Frees b's storage and zeroes it. */
void tars_buf_free(tars_buf *b);

/* Reads all of a stream (or a file, when path is not NULL) into a NUL-terminated malloc'ed buffer;
 * *len gets its size in bytes. Returns NULL on an I/O or allocation failure. */
char *tars_read_all(const char *path, size_t *len);

/* Decodes one UTF-8 code point at s (n bytes available). Returns the number of bytes used (1..4) and
 * stores the code point in *cp, or returns -1 on an invalid or truncated sequence. */
int tars_utf8_next(const char *s, size_t n, unsigned long *cp);

/* Sleeps for ms milliseconds (returns early on a signal). */
void tars_sleep_ms(long ms);

#endif
