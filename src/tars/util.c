#include "util.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int tars_parse_long(const char *s, long *out) {
  if (!s || !*s) return -1;
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || *end || end == s) return -1;
  *out = v;
  return 0;
}

int tars_parse_double(const char *s, double *out) {
  if (!s || !*s) return -1;
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || *end || end == s || !isfinite(v)) return -1;
  *out = v;
  return 0;
}

int tars_buf_add(tars_buf *b, const char *s, size_t n) {
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->len + n + 1) cap *= 2;
    char *d = realloc(b->data, cap);
    if (!d) return -1;
    b->data = d;
    b->cap = cap;
  }
  if (n) memcpy(b->data + b->len, s, n);
  b->len += n;
  b->data[b->len] = 0;
  return 0;
}

int tars_buf_adds(tars_buf *b, const char *s) { return tars_buf_add(b, s, strlen(s)); }

int tars_buf_add_utf8(tars_buf *b, unsigned long cp) {
  char u[4];
  size_t n;
  if (cp < 0x80) {
    u[0] = (char)cp;
    n = 1;
  } else if (cp < 0x800) {
    u[0] = (char)(0xC0 | (cp >> 6));
    u[1] = (char)(0x80 | (cp & 0x3F));
    n = 2;
  } else if (cp < 0x10000) {
    if (cp >= 0xD800 && cp <= 0xDFFF) return -1;
    u[0] = (char)(0xE0 | (cp >> 12));
    u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    u[2] = (char)(0x80 | (cp & 0x3F));
    n = 3;
  } else if (cp <= 0x10FFFF) {
    u[0] = (char)(0xF0 | (cp >> 18));
    u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    u[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    u[3] = (char)(0x80 | (cp & 0x3F));
    n = 4;
  } else {
    return -1;
  }
  return tars_buf_add(b, u, n);
}

void tars_buf_free(tars_buf *b) {
  free(b->data);
  b->data = NULL;
  b->len = b->cap = 0;
}

char *tars_read_all(const char *path, size_t *len) {
  FILE *f = path ? fopen(path, "rb") : stdin;
  if (!f) return NULL;
  tars_buf b = {0};
  char chunk[65536];
  size_t n;
  int bad = 0;
  while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
    if (tars_buf_add(&b, chunk, n)) {
      bad = 1;
      break;
    }
  int saved = errno;
  if (ferror(f)) bad = 1;
  if (path) fclose(f);
  errno = saved;
  if (!bad && !b.data) bad = tars_buf_add(&b, "", 0);
  if (bad) {
    tars_buf_free(&b);
    return NULL;
  }
  if (len) *len = b.len;
  return b.data;
}

int tars_utf8_next(const char *s, size_t n, unsigned long *cp) {
  const unsigned char *u = (const unsigned char *)s;
  if (n == 0) return -1;
  unsigned long c = u[0];
  int k;
  unsigned long min;
  if (c < 0x80) {
    *cp = c;
    return 1;
  } else if ((c & 0xE0) == 0xC0) {
    k = 2, c &= 0x1F, min = 0x80;
  } else if ((c & 0xF0) == 0xE0) {
    k = 3, c &= 0x0F, min = 0x800;
  } else if ((c & 0xF8) == 0xF0) {
    k = 4, c &= 0x07, min = 0x10000;
  } else {
    return -1;
  }
  if ((size_t)k > n) return -1;
  for (int i = 1; i < k; i++) {
    if ((u[i] & 0xC0) != 0x80) return -1;
    c = (c << 6) | (u[i] & 0x3F);
  }
  if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) return -1;
  *cp = c;
  return k;
}

void tars_sleep_ms(long ms) {
  if (ms <= 0) return;
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}
