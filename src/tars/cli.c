#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "parse.h"
#include "resize.h"
#include "util.h"

/* Reads the value of flag argv[*i] into *out (a positive long). */
static int flag_long(int argc, char **argv, int *i, long *out) {
  const char *f = argv[*i];
  if (*i + 1 >= argc) {
    fprintf(stderr, "tars: %s needs a value\n", f);
    return -1;
  }
  const char *v = argv[++*i];
  if (tars_parse_long(v, out) || *out <= 0) {
    fprintf(stderr, "tars: %s \"%s\" is not a positive integer\n", f, v);
    return -1;
  }
  return 0;
}

static int parse_version(const char *v, int *out) {
  if (!strcmp(v, "1.0") || !strcmp(v, "1") || !strcmp(v, "doubao")) *out = 10;
  else if (!strcmp(v, "1.5")) *out = 15;
  else {
    fprintf(stderr, "tars: --model-version \"%s\" must be 1.0 or 1.5\n", v);
    return -1;
  }
  return 0;
}

int tars_cmd_resize(int argc, char **argv) {
  long wh[2], minp = TARS_MIN_PIXELS, maxp = TARS_MAX_PIXELS;
  int npos = 0;
  for (int i = 0; i < argc; i++) {
    if (!strcmp(argv[i], "--min-pixels")) {
      if (flag_long(argc, argv, &i, &minp)) return 2;
    } else if (!strcmp(argv[i], "--max-pixels")) {
      if (flag_long(argc, argv, &i, &maxp)) return 2;
    } else if (argv[i][0] == '-' && argv[i][1]) {
      fprintf(stderr, "tars resize: unknown option \"%s\"\n", argv[i]);
      return 2;
    } else if (npos < 2) {
      if (tars_parse_long(argv[i], &wh[npos]) || wh[npos] <= 0) {
        fprintf(stderr, "tars resize: %s \"%s\" is not a positive integer\n", npos ? "height" : "width", argv[i]);
        return 2;
      }
      npos++;
    } else {
      fprintf(stderr, "tars resize: unexpected argument \"%s\"\n", argv[i]);
      return 2;
    }
  }
  if (npos != 2) {
    fprintf(stderr, "usage: tars resize W H [--min-pixels N] [--max-pixels N]\n");
    return 2;
  }
  long rh, rw;
  char err[200];
  if (tars_smart_resize(wh[1], wh[0], minp, maxp, &rh, &rw, err, sizeof err)) {
    fprintf(stderr, "tars resize: %s\n", err);
    return 1;
  }
  printf("%ld %ld\n", rw, rh);
  return 0;
}

int tars_cmd_parse(int argc, char **argv) {
  long w = 1920, h = 1080, minp = TARS_MIN_PIXELS, maxp = TARS_MAX_PIXELS;
  int version = 15;
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--model-version")) {
      if (i + 1 >= argc) {
        fprintf(stderr, "tars parse: --model-version needs a value\n");
        return 2;
      }
      if (parse_version(argv[++i], &version)) return 2;
    } else if (!strcmp(a, "--width")) {
      if (flag_long(argc, argv, &i, &w)) return 2;
    } else if (!strcmp(a, "--height")) {
      if (flag_long(argc, argv, &i, &h)) return 2;
    } else if (!strcmp(a, "--min-pixels")) {
      if (flag_long(argc, argv, &i, &minp)) return 2;
    } else if (!strcmp(a, "--max-pixels")) {
      if (flag_long(argc, argv, &i, &maxp)) return 2;
    } else {
      fprintf(stderr, "tars parse: unknown argument \"%s\" (the reply is read from stdin)\n", a);
      return 2;
    }
  }
  char err[400];
  tars_space sp;
  if (tars_space_init(&sp, version, w, h, minp, maxp, err, sizeof err)) {
    fprintf(stderr, "tars parse: %s\n", err);
    return 2;
  }
  char *text = tars_read_all(NULL, NULL);
  if (!text) {
    fprintf(stderr, "tars parse: cannot read stdin\n");
    return 1;
  }
  tars_reply r;
  if (tars_parse_reply(text, &sp, &r, err, sizeof err)) {
    fprintf(stderr, "tars parse: parse error: %s\n", err);
    free(text);
    return 1;
  }
  char *json = tars_reply_to_json(&r);
  printf("%s\n", json ? json : "null");
  free(json);
  tars_reply_free(&r);
  free(text);
  return json ? 0 : 1;
}
