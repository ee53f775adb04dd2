#include "cli.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <signal.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent.h"
#include "parse.h"
#include "prompt.h"
#include "resize.h"
#include "util.h"
#include "x11.h"

/* Reads the value of flag argv[*i] of command cmd into *out (a positive long); -1 after a message. */
static int flag_long(const char *cmd, int argc, char **argv, int *i, long *out) {
  const char *f = argv[*i];
  if (*i + 1 >= argc) {
    fprintf(stderr, "tars %s: %s needs a value\n", cmd, f);
    return -1;
  }
  const char *v = argv[++*i];
  if (tars_parse_long(v, out) || *out <= 0) {
    fprintf(stderr, "tars %s: %s \"%s\" is not a positive integer\n", cmd, f, v);
    return -1;
  }
  return 0;
}

static int parse_version(const char *cmd, const char *v, int *out) {
  if (!strcmp(v, "1.0") || !strcmp(v, "1") || !strcmp(v, "doubao")) *out = 10;
  else if (!strcmp(v, "1.5")) *out = 15;
  else {
    fprintf(stderr, "tars %s: --model-version \"%s\" must be 1.0 or 1.5\n", cmd, v);
    return -1;
  }
  return 0;
}

static int wants_help(int argc, char **argv);

#define RESIZE_USAGE "usage: tars resize W H [--min-pixels N] [--max-pixels N]"

int tars_cmd_resize(int argc, char **argv) {
  long wh[2], minp = TARS_MIN_PIXELS, maxp = TARS_MAX_PIXELS;
  int npos = 0;
  if (wants_help(argc, argv)) {
    printf(RESIZE_USAGE "\n"
           "prints W' H' = smart_resize of the W x H screen (factor 28)\n"
           "  --min-pixels N     lower pixel bound (%ld)\n"
           "  --max-pixels N     upper pixel bound (%ld)\n",
           (long)TARS_MIN_PIXELS, (long)TARS_MAX_PIXELS);
    return 0;
  }
  for (int i = 0; i < argc; i++) {
    if (!strcmp(argv[i], "--min-pixels")) {
      if (flag_long("resize", argc, argv, &i, &minp)) return 2;
    } else if (!strcmp(argv[i], "--max-pixels")) {
      if (flag_long("resize", argc, argv, &i, &maxp)) return 2;
    } else if (argv[i][0] == '-' && argv[i][1] && !isdigit((unsigned char)argv[i][1])) {
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
    fprintf(stderr, RESIZE_USAGE "\n");
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
  if (wants_help(argc, argv)) {
    printf("usage: tars parse [options] < reply.txt\n"
           "reads a model reply on stdin, prints its actions as one JSON line\n"
           "  --model-version V  1.0 or 1.5 (default)\n"
           "  --width W          screen width (1920)\n"
           "  --height H         screen height (1080)\n"
           "  --min-pixels N     smart_resize lower bound (%ld)\n"
           "  --max-pixels N     smart_resize upper bound (%ld)\n",
           (long)TARS_MIN_PIXELS, (long)TARS_MAX_PIXELS);
    return 0;
  }
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--model-version")) {
      if (i + 1 >= argc) {
        fprintf(stderr, "tars parse: --model-version needs a value\n");
        return 2;
      }
      if (parse_version("parse", argv[++i], &version)) return 2;
    } else if (!strcmp(a, "--width")) {
      if (flag_long("parse", argc, argv, &i, &w)) return 2;
    } else if (!strcmp(a, "--height")) {
      if (flag_long("parse", argc, argv, &i, &h)) return 2;
    } else if (!strcmp(a, "--min-pixels")) {
      if (flag_long("parse", argc, argv, &i, &minp)) return 2;
    } else if (!strcmp(a, "--max-pixels")) {
      if (flag_long("parse", argc, argv, &i, &maxp)) return 2;
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

/* ---------- table-driven options ---------- */

typedef enum { OPT_LONG, OPT_DOUBLE, OPT_STR, OPT_FLAG, OPT_VERSION, OPT_MODE } opt_kind;

typedef struct {
  const char *name;
  opt_kind kind;
  void *dst;
  double min, max;
  const char *help;
} opt_t;

/* Parses argv against opts; positional arguments go to *pos (at most one). Returns 0 or 2 (bad usage,
 * message printed). */
static int parse_opts(const char *cmd, int argc, char **argv, const opt_t *opts, const char **pos) {
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    const opt_t *o = NULL;
    for (const opt_t *p = opts; p->name; p++)
      if (!strcmp(a, p->name)) o = p;
    if (!o) {
      if (a[0] == '-' && a[1]) {
        fprintf(stderr, "tars %s: unknown option \"%s\" (see tars %s --help)\n", cmd, a, cmd);
        return 2;
      }
      if (!pos || *pos) {
        fprintf(stderr, "tars %s: unexpected argument \"%s\" (quote the task as one argument)\n", cmd, a);
        return 2;
      }
      *pos = a;
      continue;
    }
    if (o->kind == OPT_FLAG) {
      *(int *)o->dst = 1;
      continue;
    }
    if (i + 1 >= argc) {
      fprintf(stderr, "tars %s: %s needs a value\n", cmd, a);
      return 2;
    }
    const char *v = argv[++i];
    long l;
    double d;
    switch (o->kind) {
      case OPT_LONG:
        if (tars_parse_long(v, &l) || l < o->min || l > o->max) {
          fprintf(stderr, "tars %s: %s \"%s\" must be an integer in %.0f..%.0f\n", cmd, a, v, o->min, o->max);
          return 2;
        }
        *(long *)o->dst = l;
        break;
      case OPT_DOUBLE:
        if (tars_parse_double(v, &d) || d < o->min || d > o->max) {
          fprintf(stderr, "tars %s: %s \"%s\" must be a number in %g..%g\n", cmd, a, v, o->min, o->max);
          return 2;
        }
        *(double *)o->dst = d;
        break;
      case OPT_VERSION:
        if (parse_version(cmd, v, (int *)o->dst)) return 2;
        break;
      case OPT_MODE:
        if (!strcmp(v, "computer")) *(tars_mode *)o->dst = TARS_MODE_COMPUTER;
        else if (!strcmp(v, "grounding")) *(tars_mode *)o->dst = TARS_MODE_GROUNDING;
        else {
          fprintf(stderr, "tars %s: --mode \"%s\" must be computer or grounding\n", cmd, v);
          return 2;
        }
        break;
      default:
        *(const char **)o->dst = v;
    }
  }
  return 0;
}

static void print_opts(const char *usage, const opt_t *opts) {
  printf("%s\n", usage);
  for (const opt_t *p = opts; p->name; p++) printf("  %-18s %s\n", p->name, p->help);
}

static int wants_help(int argc, char **argv) {
  for (int i = 0; i < argc; i++)
    if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return 1;
  return 0;
}

/* Help, options and the one positional argument (required when missing_msg is not NULL) of a command.
 * Returns 0 to go on, 2 on bad usage (message printed), -1 after printing the help. */
static int command_args(const char *cmd, const char *usage, int argc, char **argv, const opt_t *opts,
                        const char **pos, const char *missing_msg) {
  if (wants_help(argc, argv)) {
    print_opts(usage, opts);
    return -1;
  }
  int rc = parse_opts(cmd, argc, argv, opts, pos);
  if (rc) return rc;
  if (missing_msg && !*pos) {
    fprintf(stderr, "tars %s: %s\n", cmd, missing_msg);
    return 2;
  }
  return 0;
}

static char *read_prompt_file(const char *cmd, const char *path) {
  if (!path) return NULL;
  char *t = tars_read_all(path, NULL);
  if (!t) fprintf(stderr, "tars %s: cannot read --prompt-file %s: %s\n", cmd, path, strerror(errno));
  return t;
}

/* Opens $DISPLAY for command cmd; on failure prints one line, with the advice when DISPLAY is unset. */
static tars_x11 *open_display(const char *cmd, const char *advice) {
  char err[400];
  tars_x11 *x = tars_x11_open(NULL, err, sizeof err);
  if (!x) {
    const char *d = getenv("DISPLAY");
    fprintf(stderr, "tars %s: %s%s\n", cmd, err, (!d || !*d) ? advice : "");
  }
  return x;
}

#define NO_X_ADVICE " (tars drives an X11 session: start an X server, e.g. Xvfb :99, and set DISPLAY=:99)"

/* 1 when name ends in .png (any letter case). */
static int ends_png(const char *name) {
  size_t n = strlen(name);
  return n > 4 && !strcasecmp(name + n - 4, ".png");
}

int tars_cmd_prompt(int argc, char **argv) {
  tars_mode mode = TARS_MODE_COMPUTER;
  const char *language = "English", *file = NULL, *task = NULL;
  const opt_t opts[] = {{"--mode", OPT_MODE, &mode, 0, 0, "computer (default) or grounding"},
                        {"--language", OPT_STR, &language, 0, 0, "language of the Thought (English)"},
                        {"--prompt-file", OPT_STR, &file, 0, 0, "a template replacing the built-in prompt"},
                        {0}};
  int rc = command_args("prompt", "usage: tars prompt [options] \"task\"", argc, argv, opts, &task, "missing the task");
  if (rc) return rc < 0 ? 0 : rc;
  char *tmpl = NULL;
  if (file && !(tmpl = read_prompt_file("prompt", file))) return 1;
  char *p = tars_prompt_build(mode, language, task, tmpl);
  free(tmpl);
  if (!p) return 1;
  printf("%s\n", p);
  free(p);
  return 0;
}

int tars_cmd_screenshot(int argc, char **argv) {
  const char *outp = NULL;
  const opt_t opts[] = {{"-o", OPT_STR, &outp, 0, 0, "output PNG file"}, {0}};
  int rc = command_args("screenshot", "usage: tars screenshot -o FILE.png", argc, argv, opts, NULL, NULL);
  if (rc) return rc < 0 ? 0 : rc;
  if (!outp) {
    fprintf(stderr, "tars screenshot: -o FILE.png is required\n");
    return 2;
  }
  if (!ends_png(outp)) {
    fprintf(stderr, "tars screenshot: -o \"%s\" must end in .png (tars writes PNG only)\n", outp);
    return 2;
  }
  char err[400];
  tars_x11 *x = open_display("screenshot", NO_X_ADVICE);
  if (!x) return 1;
  tars_image im;
  rc = tars_x11_capture(x, &im, err, sizeof err);
  char how[200];
  const char *why = tars_x11_shm_why(x);
  snprintf(how, sizeof how, "%s%s%s", tars_x11_used_shm(x) ? "MIT-SHM" : "XGetImage", why ? "; MIT-SHM unavailable: " : "",
           why ? why : "");
  tars_x11_close(x);
  if (rc) {
    fprintf(stderr, "tars screenshot: %s\n", err);
    return 1;
  }
  unsigned char *png;
  size_t len;
  FILE *f = NULL;
  rc = tars_png_encode(&im, &png, &len);
  if (!rc) {
    f = fopen(outp, "wb");
    if (!f || fwrite(png, 1, len, f) != len) rc = -1;
    if (f && fclose(f)) rc = -1;
    free(png);
  }
  if (rc) fprintf(stderr, "tars screenshot: cannot write %s: %s\n", outp, strerror(errno));
  else fprintf(stderr, "tars screenshot: %dx%d (%s) -> %s\n", im.w, im.h, how, outp);
  tars_image_free(&im);
  return rc ? 1 : 0;
}

int tars_cmd_do(int argc, char **argv) {
  int version = 15, dry = 0;
  long minp = TARS_MIN_PIXELS, maxp = 0;
  const char *text = NULL;
  const opt_t opts[] = {{"--model-version", OPT_VERSION, &version, 0, 0, "1.0 or 1.5 (default)"},
                        {"--min-pixels", OPT_LONG, &minp, 1, 1e9, "smart_resize lower bound"},
                        {"--max-pixels", OPT_LONG, &maxp, 1, 1e9, "smart_resize upper bound"},
                        {"--dry-run", OPT_FLAG, &dry, 0, 0, "print the actions, perform nothing"},
                        {0}};
  int rc = command_args("do", "usage: tars do [options] \"click(start_box='(100,200)')\"", argc, argv, opts, &text,
                        "missing the action text");
  if (rc) return rc < 0 ? 0 : rc;
  char err[400];
  tars_x11 *x = open_display("do", NO_X_ADVICE);
  if (!x) return 1;
  int w, h;
  tars_x11_size(x, &w, &h);
  tars_space sp;
  if (!maxp) maxp = TARS_MAX_PIXELS;
  tars_reply r;
  rc = 1;
  if (tars_space_init(&sp, version, w, h, minp, maxp, err, sizeof err)) {
    fprintf(stderr, "tars do: %s\n", err);
  } else if (tars_parse_reply(text, &sp, &r, err, sizeof err)) {
    fprintf(stderr, "tars do: parse error: %s\n", err);
  } else {
    rc = 0;
    for (int i = 0; i < r.n; i++) {
      if (dry) fputs("(dry run) ", stdout);
      tars_describe_action(&r.actions[i], stdout);
    }
    fflush(stdout);
    for (int i = 0; i < r.n && !rc && !dry; i++)
      if (tars_x11_can_execute(&r.actions[i], err, sizeof err)) {
        fprintf(stderr, "tars do: nothing performed: %s\n", err);
        rc = 1;
      }
    for (int i = 0; i < r.n && !rc && !dry; i++) {
      if (tars_x11_execute(x, &r.actions[i], err, sizeof err)) {
        fprintf(stderr, "tars do: %s: %s\n", tars_action_name(r.actions[i].type), err);
        rc = 1;
      }
    }
    tars_reply_free(&r);
  }
  tars_x11_close(x);
  return rc;
}

/* ---------- run ---------- */

static volatile int g_stop;
static void on_sigint(int sig) {
  (void)sig;
  g_stop = 1;
}

typedef struct {
  tars_image im;
} file_screen;

static int file_capture(void *ctx, tars_image *out, char *err, int errlen) {
  file_screen *f = ctx;
  if (tars_image_alloc(out, f->im.w, f->im.h)) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  memcpy(out->rgb, f->im.rgb, (size_t)f->im.w * (size_t)f->im.h * 3);
  return 0;
}

/* --save-dir: created when missing (one level), then it must be a directory tars can write into.
 * Returns 0, or -1 after printing one line. */
static int check_save_dir(const char *dir) {
  struct stat st;
  if (stat(dir, &st) && (errno != ENOENT || mkdir(dir, 0777))) {
    fprintf(stderr, "tars run: cannot create --save-dir %s: %s\n", dir, strerror(errno));
    return -1;
  }
  if (stat(dir, &st) || !S_ISDIR(st.st_mode)) {
    fprintf(stderr, "tars run: --save-dir %s is not a directory\n", dir);
    return -1;
  }
  if (access(dir, W_OK | X_OK)) {
    fprintf(stderr, "tars run: --save-dir %s is not writable: %s\n", dir, strerror(errno));
    return -1;
  }
  return 0;
}

int tars_cmd_run(int argc, char **argv) {
  tars_agent_cfg cfg;
  tars_agent_defaults(&cfg);
  const char *base = NULL, *model = NULL, *prompt_file = NULL, *image = NULL, *task = NULL;
  const char *api_key = getenv("TARS_API_KEY");
  long max_steps = cfg.max_steps, history = cfg.history, retries = cfg.client.retries;
  int dry = 0;
  const opt_t opts[] = {
      {"--base-url", OPT_STR, &base, 0, 0, "OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1 (required)"},
      {"--model", OPT_STR, &model, 0, 0, "served model name (required)"},
      {"--model-version", OPT_VERSION, &cfg.version, 0, 0, "1.0 (relative 0..1000) or 1.5 (absolute; default)"},
      {"--mode", OPT_MODE, &cfg.mode, 0, 0, "computer (default) or grounding (one click)"},
      {"--max-steps", OPT_LONG, &max_steps, 1, 10000, "model calls before status max_loop (100)"},
      {"--history", OPT_LONG, &history, 1, 50, "screenshots per request, current included (5)"},
      {"--dry-run", OPT_FLAG, &dry, 0, 0, "print the actions, perform no input"},
      {"--image", OPT_STR, &image, 0, 0, "with --dry-run: use this PNG as the screen (no X needed)"},
      {"--save-dir", OPT_STR, &cfg.save_dir, 0, 0, "write each step's screenshot, reply and actions there"},
      {"--prompt-file", OPT_STR, &prompt_file, 0, 0, "template replacing the built-in prompt ({language}, {instruction})"},
      {"--language", OPT_STR, &cfg.language, 0, 0, "language of the Thought (English)"},
      {"--temperature", OPT_DOUBLE, &cfg.client.temperature, 0, 2, "sampling temperature (0)"},
      {"--top-p", OPT_DOUBLE, &cfg.client.top_p, 0, 1, "nucleus mass (0.7)"},
      {"--max-tokens", OPT_LONG, &cfg.client.max_tokens, 1, 1000000, "reply budget (1000)"},
      {"--timeout", OPT_LONG, &cfg.client.timeout_s, 1, 3600, "seconds per request (60)"},
      {"--retries", OPT_LONG, &retries, 0, 20, "extra attempts per model call or unusable reply (3)"},
      {"--retry-delay-ms", OPT_LONG, &cfg.client.retry_delay_ms, 0, 600000, "first backoff, doubled each retry (1000)"},
      {"--wait-ms", OPT_LONG, &cfg.wait_ms, 0, 600000, "pause of the wait() action (5000)"},
      {"--interval-ms", OPT_LONG, &cfg.interval_ms, 0, 600000, "pause after each step (1000)"},
      {"--min-pixels", OPT_LONG, &cfg.min_pixels, 1, 1e9, "image pixel lower bound (78400)"},
      {"--max-pixels", OPT_LONG, &cfg.max_pixels, 1, 1e9, "upper bound (1.5: 12845056 for smart_resize; 1.0: 2116800, image downscaled)"},
      {0}};
  if (wants_help(argc, argv)) {
    print_opts("usage: tars run --base-url URL --model NAME [options] \"task\"\n"
               "exit status: 0 end, 3 call_user, 4 max_loop, 130 stopped (Ctrl-C), 1 error, 2 bad usage\n"
               "environment: TARS_API_KEY (sent as a Bearer token), DISPLAY",
               opts);
    return 0;
  }
  int rc = parse_opts("run", argc, argv, opts, &task);
  if (rc) return rc;
  if (!base || !*base) {
    fprintf(stderr, "tars run: --base-url is required\n");
    return 2;
  }
  if (strncmp(base, "http://", 7) && strncmp(base, "https://", 8)) {
    fprintf(stderr, "tars run: --base-url \"%s\" must start with http:// or https://\n", base);
    return 2;
  }
  if (!model || !*model) {
    fprintf(stderr, "tars run: --model is required\n");
    return 2;
  }
  if (!task || !*task) {
    fprintf(stderr, "tars run: missing the task (the last argument)\n");
    return 2;
  }
  if (image && !dry) {
    fprintf(stderr, "tars run: --image needs --dry-run (input cannot go to a picture)\n");
    return 2;
  }
  if (cfg.min_pixels && cfg.max_pixels && cfg.min_pixels > cfg.max_pixels) {
    fprintf(stderr, "tars run: --min-pixels %ld exceeds --max-pixels %ld\n", cfg.min_pixels, cfg.max_pixels);
    return 2;
  }
  cfg.task = task;
  cfg.max_steps = (int)max_steps;
  cfg.history = (int)history;
  cfg.client.retries = (int)retries;
  cfg.client.base_url = base;
  cfg.client.model = model;
  cfg.client.api_key = api_key;
  char *tmpl = NULL;
  if (prompt_file && !(tmpl = read_prompt_file("run", prompt_file))) return 1;
  if (cfg.save_dir && check_save_dir(cfg.save_dir)) {
    free(tmpl);
    return 1;
  }
  cfg.prompt_template = tmpl;

  char err[1024];
  tars_env env = {0};
  file_screen fs = {{0}};
  tars_x11 *x = NULL;
  if (image) {
    if (tars_png_read(image, &fs.im, err, sizeof err)) {
      fprintf(stderr, "tars run: --image: %s\n", err);
      free(tmpl);
      return 1;
    }
    env.capture = file_capture;
    env.ctx = &fs;
  } else {
    const char *wl = getenv("WAYLAND_DISPLAY");
    if (wl && *wl) fprintf(stderr, "tars run: warning: a Wayland session; XTest and capture reach only Xwayland windows\n");
    x = open_display("run", " (tars drives an X11 session; use --dry-run --image FILE to run without one)");
    if (!x) {
      free(tmpl);
      return 1;
    }
    env.capture = tars_x11_env_capture;
    env.execute = dry ? NULL : tars_x11_env_execute;
    env.can_execute = tars_x11_env_can_execute;
    env.ctx = x;
  }
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_sigint;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);

  char *answer = NULL;
  tars_status st = tars_agent_run(&cfg, &env, &g_stop, &answer, err, sizeof err);
  printf("status: %s\n", tars_status_name(st));
  if (answer) printf("answer: %s\n", answer);
  if (st != TARS_ST_END && st != TARS_ST_CALL_USER && err[0]) fprintf(stderr, "tars run: %s\n", err);
  fflush(stdout);
  free(answer);
  free(tmpl);
  tars_image_free(&fs.im);
  if (x) tars_x11_close(x);
  switch (st) {
    case TARS_ST_END: return 0;
    case TARS_ST_CALL_USER: return 3;
    case TARS_ST_MAX_LOOP: return 4;
    case TARS_ST_USER_STOPPED: return 130;
    default: return 1;
  }
}
