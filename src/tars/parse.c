#include "parse.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "keys.h"
#include "resize.h"
#include "util.h"

static const char *const ACTION_NAMES[TARS_ACTION_COUNT] = {
    "click", "left_double", "right_single", "middle_click", "hover", "drag", "hotkey", "press",
    "release", "type", "scroll", "wait", "finished", "call_user", "long_press", "open_app",
    "press_home", "press_back", "navigate", "navigate_back", "error_env", "max_loop", "user_stop"};

typedef struct {
  const char *name;
  tars_action_type type;
} name_alias;

static const name_alias ACTION_ALIASES[] = {
    {"click", TARS_CLICK}, {"left_single", TARS_CLICK}, {"left_click", TARS_CLICK},
    {"left_double", TARS_LEFT_DOUBLE}, {"double_click", TARS_LEFT_DOUBLE},
    {"right_single", TARS_RIGHT_SINGLE}, {"right_click", TARS_RIGHT_SINGLE},
    {"middle_click", TARS_MIDDLE_CLICK}, {"hover", TARS_HOVER}, {"mouse_move", TARS_HOVER},
    {"drag", TARS_DRAG}, {"select", TARS_DRAG}, {"left_click_drag", TARS_DRAG},
    {"hotkey", TARS_HOTKEY}, {"press", TARS_KEY_DOWN}, {"keydown", TARS_KEY_DOWN},
    {"release", TARS_KEY_UP}, {"keyup", TARS_KEY_UP}, {"type", TARS_TYPE}, {"scroll", TARS_SCROLL},
    {"wait", TARS_WAIT}, {"finished", TARS_FINISHED}, {"call_user", TARS_CALL_USER},
    {"long_press", TARS_LONG_PRESS}, {"open_app", TARS_OPEN_APP}, {"press_home", TARS_PRESS_HOME},
    {"press_back", TARS_PRESS_BACK}, {"navigate", TARS_NAVIGATE}, {"navigate_back", TARS_NAVIGATE_BACK},
    {"error_env", TARS_ERROR_ENV}, {"max_loop", TARS_MAX_LOOP}, {"user_stop", TARS_USER_STOP},
};

const char *tars_action_name(tars_action_type t) {
  return (t >= 0 && t < TARS_ACTION_COUNT) ? ACTION_NAMES[t] : "?";
}

const char *tars_direction_name(tars_direction d) {
  static const char *const n[] = {"", "up", "down", "left", "right"};
  return (d >= TARS_DIR_NONE && d <= TARS_DIR_RIGHT) ? n[d] : "";
}

static void seterr(char *err, int errlen, const char *fmt, ...) {
  if (!err || errlen <= 0) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

/* A short, one-line excerpt of s (n bytes) for error messages. */
static void excerpt(const char *s, size_t n, char *out, size_t outlen) {
  size_t k = 0;
  for (size_t i = 0; i < n && k + 4 < outlen; i++) {
    if (k >= 60) {
      memcpy(out + k, "...", 3);
      k += 3;
      break;
    }
    char c = s[i];
    out[k++] = (c == '\n' || c == '\r' || c == '\t') ? ' ' : c;
  }
  out[k] = 0;
}

int tars_space_init(tars_space *sp, int version, long width, long height, long min_pixels, long max_pixels,
                    char *err, int errlen) {
  if (width <= 0 || height <= 0) {
    seterr(err, errlen, "screen size %ldx%ld must be positive", width, height);
    return -1;
  }
  sp->version = version;
  sp->width = width;
  sp->height = height;
  if (version == 10) {
    sp->wfactor = sp->hfactor = 1000.0;
  } else if (version == 15) {
    long rh, rw;
    if (tars_smart_resize(height, width, min_pixels, max_pixels, &rh, &rw, err, errlen)) return -1;
    sp->wfactor = (double)rw;
    sp->hfactor = (double)rh;
  } else {
    seterr(err, errlen, "model version must be 1.0 or 1.5");
    return -1;
  }
  return 0;
}

/* ---------- strings ---------- */

static int hexval(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

char *tars_decode_py_string(const char *s, size_t n) {
  tars_buf b = {0};
  if (tars_buf_add(&b, "", 0)) return NULL;
  for (size_t i = 0; i < n; i++) {
    if (s[i] != '\\' || i + 1 >= n) {
      if (tars_buf_add(&b, s + i, 1)) goto fail;
      continue;
    }
    char c = s[++i];
    const char *simple = NULL;
    switch (c) {
      case '\\': simple = "\\"; break;
      case '\'': simple = "'"; break;
      case '"': simple = "\""; break;
      case 'n': simple = "\n"; break;
      case 't': simple = "\t"; break;
      case 'r': simple = "\r"; break;
      case 'a': simple = "\a"; break;
      case 'b': simple = "\b"; break;
      case 'f': simple = "\f"; break;
      case 'v': simple = "\v"; break;
      case '\n': simple = ""; break; /* line continuation */
      default: break;
    }
    if (simple) {
      if (tars_buf_adds(&b, simple)) goto fail;
      continue;
    }
    if (c >= '0' && c <= '7') {
      unsigned long v = 0;
      int k = 0;
      while (k < 3 && i < n && s[i] >= '0' && s[i] <= '7') v = v * 8 + (unsigned long)(s[i++] - '0'), k++;
      i--;
      if (tars_buf_add_utf8(&b, v)) goto fail;
      continue;
    }
    int digits = c == 'x' ? 2 : c == 'u' ? 4 : c == 'U' ? 8 : 0;
    if (digits) {
      unsigned long v = 0;
      for (int k = 1; k <= digits; k++) {
        if (i + k >= n) goto fail;
        int h = hexval((unsigned char)s[i + k]);
        if (h < 0) goto fail;
        v = v * 16 + (unsigned long)h;
      }
      i += digits;
      if (tars_buf_add_utf8(&b, v)) goto fail;
      continue;
    }
    /* unknown escape: Python keeps the backslash */
    if (tars_buf_add(&b, s + i - 1, 2)) goto fail;
  }
  return b.data;
fail:
  tars_buf_free(&b);
  return NULL;
}

/* ---------- coordinates ---------- */

static int is_coord_sep(char c) {
  return c == ',' || isspace((unsigned char)c) || c == '(' || c == ')' || c == '[' || c == ']';
}

int tars_parse_coords(const char *value, double box[4], char *err, int errlen) {
  static const char *const MARKUP[] = {"<|box_start|>", "<|box_end|>", "<point>", "</point>", "<bbox>", "</bbox>"};
  size_t n = strlen(value);
  char *t = malloc(n + 1);
  if (!t) return -1;
  /* markup -> spaces, keeping positions */
  memcpy(t, value, n + 1);
  for (size_t m = 0; m < sizeof MARKUP / sizeof MARKUP[0]; m++) {
    size_t ml = strlen(MARKUP[m]);
    for (char *p = strstr(t, MARKUP[m]); p; p = strstr(p + ml, MARKUP[m])) memset(p, ' ', ml);
  }
  double v[4];
  int count = 0;
  size_t i = 0;
  char ex[80];
  excerpt(value, n, ex, sizeof ex);
  while (i < n) {
    if (is_coord_sep(t[i])) {
      i++;
      continue;
    }
    size_t s = i;
    while (i < n && !is_coord_sep(t[i])) i++;
    size_t len = i - s;
    /* digits with at most one decimal point; nothing else (no sign, exponent, inf, nan) */
    int ok = len > 0, dots = 0, digits = 0;
    for (size_t k = s; k < i && ok; k++) {
      if (t[k] == '.') ok = ++dots <= 1;
      else if (isdigit((unsigned char)t[k])) digits++;
      else ok = 0;
    }
    if (!ok || !digits) {
      char tok[40];
      excerpt(t + s, len, tok, sizeof tok);
      seterr(err, errlen, "invalid coordinate number \"%s\" at position %zu of \"%s\"", tok, s, ex);
      free(t);
      return -1;
    }
    if (count == 4) {
      seterr(err, errlen, "too many numbers in coordinate \"%s\" (need 2 or 4)", ex);
      free(t);
      return -1;
    }
    char num[64];
    if (len >= sizeof num) len = sizeof num - 1;
    memcpy(num, t + s, len);
    num[len] = 0;
    v[count++] = strtod(num, NULL);
  }
  free(t);
  if (count != 2 && count != 4) {
    if (count == 0)
      seterr(err, errlen, "empty coordinate \"%s\"", ex);
    else
      seterr(err, errlen, "coordinate \"%s\" has %d number%s (need 2 or 4)", ex, count, count == 1 ? "" : "s");
    return -1;
  }
  if (count == 2) {
    box[0] = box[2] = v[0];
    box[1] = box[3] = v[1];
  } else {
    memcpy(box, v, sizeof v);
  }
  return count;
}

int tars_map_point(tars_point *p, const tars_space *sp, char *err, int errlen) {
  p->fx = (p->box[0] / sp->wfactor + p->box[2] / sp->wfactor) / 2.0;
  p->fy = (p->box[1] / sp->hfactor + p->box[3] / sp->hfactor) / 2.0;
  for (int k = 0; k < 4; k++) {
    double f = p->box[k] / ((k & 1) ? sp->hfactor : sp->wfactor);
    if (f > TARS_MAX_OVERSHOOT) {
      seterr(err, errlen, "coordinate %g lies outside the %gx%g image the model saw", p->box[k], sp->wfactor,
             sp->hfactor);
      return -1;
    }
  }
  p->sx = p->fx * (double)sp->width;
  p->sy = p->fy * (double)sp->height;
  long x = lround(p->sx), y = lround(p->sy);
  long cx = x < 0 ? 0 : x > sp->width - 1 ? sp->width - 1 : x;
  long cy = y < 0 ? 0 : y > sp->height - 1 ? sp->height - 1 : y;
  p->clamped = cx != x || cy != y;
  p->x = (int)cx;
  p->y = (int)cy;
  return 0;
}

/* ---------- action grammar ---------- */

typedef struct {
  char key[32];
  char *value; /* decoded */
  int quoted;
} arg_t;

#define MAX_ARGS 8

static const char *skip_ws(const char *p, const char *e) {
  while (p < e && isspace((unsigned char)*p)) p++;
  return p;
}

static int is_ident(char c) { return isalnum((unsigned char)c) || c == '_'; }

/* Does the quote at q close a value? Yes when what follows (spaces skipped) is the end, ')', or
 * ',' key '='. This lets an unescaped apostrophe inside a value survive. */
static int closes_value(const char *q, const char *e) {
  const char *p = skip_ws(q + 1, e);
  if (p >= e || *p == ')') return 1;
  if (*p != ',') return 0;
  p = skip_ws(p + 1, e);
  const char *k = p;
  while (p < e && is_ident(*p)) p++;
  if (p == k) return 0;
  p = skip_ws(p, e);
  return p < e && *p == '=';
}

static void free_args(arg_t *a, int n) {
  for (int i = 0; i < n; i++) free(a[i].value);
}

/* Parses one action call at *pp (up to e). On success advances *pp past it. */
static int parse_call(const char **pp, const char *e, char *name, size_t namelen, arg_t *args, int *nargs,
                      char *err, int errlen) {
  const char *p = *pp, *start = p;
  char ex[80];
  *nargs = 0;
  const char *ns = p;
  while (p < e && is_ident(*p)) p++;
  size_t nl = (size_t)(p - ns);
  if (nl == 0 || nl >= namelen) {
    excerpt(start, (size_t)(e - start), ex, sizeof ex);
    seterr(err, errlen, "expected an action like name(key='value') at \"%s\"", ex);
    return -1;
  }
  memcpy(name, ns, nl);
  name[nl] = 0;
  p = skip_ws(p, e);
  if (p >= e || *p != '(') {
    excerpt(start, (size_t)(e - start), ex, sizeof ex);
    seterr(err, errlen, "expected '(' after the action name in \"%s\"", ex);
    return -1;
  }
  p++;
  for (;;) {
    p = skip_ws(p, e);
    if (p >= e) break; /* tolerate a missing ')' */
    if (*p == ')') {
      p++;
      break;
    }
    const char *ks = p;
    while (p < e && is_ident(*p)) p++;
    size_t kl = (size_t)(p - ks);
    p = skip_ws(p, e);
    if (kl == 0 || kl >= sizeof args[0].key || p >= e || *p != '=') {
      excerpt(ks, (size_t)(e - ks), ex, sizeof ex);
      seterr(err, errlen, "expected key='value' at \"%s\"", ex);
      free_args(args, *nargs);
      return -1;
    }
    p = skip_ws(p + 1, e);
    const char *vs, *ve;
    int quoted = 0;
    if (p < e && (*p == '\'' || *p == '"')) {
      char q = *p++;
      quoted = 1;
      vs = p;
      while (p < e) {
        if (*p == '\\' && p + 1 < e) {
          p += 2;
          continue;
        }
        if (*p == q && closes_value(p, e)) break;
        p++;
      }
      ve = p;
      if (p < e) p++; /* closing quote; a missing one is tolerated */
      else
        while (ve > vs && isspace((unsigned char)ve[-1])) ve--;
    } else {
      int depth = 0;
      vs = p;
      while (p < e) {
        char c = *p;
        if (c == '(' || c == '[') depth++;
        else if ((c == ')' || c == ']') && depth > 0) depth--;
        else if (depth == 0 && (c == ',' || c == ')')) break;
        p++;
      }
      ve = p;
      while (ve > vs && isspace((unsigned char)ve[-1])) ve--;
    }
    char *val = quoted ? tars_decode_py_string(vs, (size_t)(ve - vs)) : strndup(vs, (size_t)(ve - vs));
    if (!val) {
      excerpt(vs, (size_t)(ve - vs), ex, sizeof ex);
      seterr(err, errlen, "bad escape in the string \"%s\"", ex);
      free_args(args, *nargs);
      return -1;
    }
    char key[32];
    memcpy(key, ks, kl);
    key[kl] = 0;
    /* whole-key aliases (reference/uitars.md 2.3 step 5) */
    if (!strcmp(key, "point") || !strcmp(key, "start_point")) strcpy(key, "start_box");
    else if (!strcmp(key, "end_point")) strcpy(key, "end_box");
    else if (!strcmp(key, "hotkey")) strcpy(key, "key");
    int slot = *nargs;
    for (int i = 0; i < *nargs; i++)
      if (!strcmp(args[i].key, key)) slot = i;
    if (slot == *nargs) {
      if (*nargs == MAX_ARGS) {
        free(val);
        excerpt(start, (size_t)(e - start), ex, sizeof ex);
        seterr(err, errlen, "too many arguments in \"%s\"", ex);
        free_args(args, *nargs);
        return -1;
      }
      (*nargs)++;
    } else {
      free(args[slot].value);
    }
    strcpy(args[slot].key, key);
    args[slot].value = val;
    args[slot].quoted = quoted;
    p = skip_ws(p, e);
    if (p < e && *p == ',') {
      p++;
      continue;
    }
    if (p < e && *p == ')') {
      p++;
      break;
    }
    if (p >= e) break;
    excerpt(p, (size_t)(e - p), ex, sizeof ex);
    seterr(err, errlen, "expected ',' or ')' at \"%s\"", ex);
    free_args(args, *nargs);
    return -1;
  }
  *pp = p;
  return 0;
}

static const char *find_arg(arg_t *a, int n, const char *key) {
  for (int i = 0; i < n; i++)
    if (!strcmp(a[i].key, key)) return a[i].value;
  return NULL;
}

static int get_point(tars_action *act, arg_t *a, int n, const char *key, tars_point *pt, int required,
                     const tars_space *sp, char *err, int errlen) {
  const char *v = find_arg(a, n, key);
  char ex[80], e2[200];
  excerpt(act->raw, strlen(act->raw), ex, sizeof ex);
  if (!v) {
    if (!required) return 0;
    seterr(err, errlen, "%s needs %s in \"%s\"", tars_action_name(act->type), key, ex);
    return -1;
  }
  const char *q = v;
  while (*q && isspace((unsigned char)*q)) q++;
  if (!*q) {
    seterr(err, errlen, "%s's %s is empty in \"%s\"", tars_action_name(act->type), key, ex);
    return -1;
  }
  int c = tars_parse_coords(v, pt->box, e2, sizeof e2);
  if (c < 0) {
    seterr(err, errlen, "%s in \"%s\"", e2, ex);
    return -1;
  }
  pt->has = 1;
  pt->n = c;
  if (sp && tars_map_point(pt, sp, e2, sizeof e2)) {
    seterr(err, errlen, "%s in \"%s\"", e2, ex);
    return -1;
  }
  return 0;
}

static int get_keys(tars_action *act, const char *v, char *err, int errlen) {
  char ex[80];
  excerpt(act->raw, strlen(act->raw), ex, sizeof ex);
  if (!v) {
    seterr(err, errlen, "%s needs key in \"%s\"", tars_action_name(act->type), ex);
    return -1;
  }
  size_t n = strlen(v);
  /* a key that is itself whitespace (' ', '\n', '\t') */
  if (n == 1 && isspace((unsigned char)v[0])) {
    act->keys[act->nkeys++] = tars_key_to_keysym_name(v);
    return 0;
  }
  /* Names are split on whitespace and '+'. A '+' right after a separator '+', or first or last (whitespace
   * aside), is the plus key ("ctrl++", "ctrl +", "+"); any other '+' is a separator. */
  size_t i = 0;
  int after_sep = 1; /* at the start, or right after a separator '+' */
  while (i < n) {
    if (isspace((unsigned char)v[i])) {
      i++;
      continue;
    }
    size_t s = i;
    if (v[i] == '+') {
      size_t j = i + 1;
      while (j < n && isspace((unsigned char)v[j])) j++;
      i++;
      if (!after_sep && j < n) {
        after_sep = 1;
        continue;
      }
    } else {
      while (i < n && !isspace((unsigned char)v[i]) && v[i] != '+') i++;
    }
    after_sep = 0;
    char name[48];
    size_t len = i - s < sizeof name - 1 ? i - s : sizeof name - 1;
    memcpy(name, v + s, len);
    name[len] = 0;
    /* two-word names: "page up", "page down" */
    if (!strcasecmp(name, "page")) {
      size_t j = i;
      while (j < n && isspace((unsigned char)v[j])) j++;
      if (!strncasecmp(v + j, "up", 2) && (j + 2 == n || !is_ident(v[j + 2]))) {
        strcpy(name, "pageup");
        i = j + 2;
      } else if (!strncasecmp(v + j, "down", 4) && (j + 4 == n || !is_ident(v[j + 4]))) {
        strcpy(name, "pagedown");
        i = j + 4;
      }
    }
    const char *ks = tars_key_to_keysym_name(name);
    if (!ks) {
      seterr(err, errlen, "unknown key name \"%s\" in \"%s\"", name, ex);
      return -1;
    }
    if (act->nkeys == TARS_MAX_KEYS) {
      seterr(err, errlen, "more than %d keys in \"%s\"", TARS_MAX_KEYS, ex);
      return -1;
    }
    act->keys[act->nkeys++] = ks;
  }
  if (act->nkeys == 0) {
    seterr(err, errlen, "%s's key is empty in \"%s\"", tars_action_name(act->type), ex);
    return -1;
  }
  return 0;
}

static void action_free(tars_action *a) {
  free(a->text);
  free(a->raw);
  memset(a, 0, sizeof *a);
}

static int build_action(tars_action *act, const char *name, arg_t *a, int n, const tars_space *sp, char *err,
                        int errlen) {
  char ex[80];
  excerpt(act->raw, strlen(act->raw), ex, sizeof ex);
  int found = 0;
  for (size_t i = 0; i < sizeof ACTION_ALIASES / sizeof ACTION_ALIASES[0]; i++)
    if (!strcasecmp(name, ACTION_ALIASES[i].name)) { /* Click(...) too */
      act->type = ACTION_ALIASES[i].type;
      found = 1;
      break;
    }
  if (!found) {
    seterr(err, errlen, "unknown action \"%s\" in \"%s\"", name, ex);
    return -1;
  }
  switch (act->type) {
    case TARS_CLICK: case TARS_LEFT_DOUBLE: case TARS_RIGHT_SINGLE: case TARS_MIDDLE_CLICK: case TARS_HOVER:
      return get_point(act, a, n, "start_box", &act->start, 1, sp, err, errlen);
    case TARS_LONG_PRESS: {
      if (get_point(act, a, n, "start_box", &act->start, 1, sp, err, errlen)) return -1;
      const char *t = find_arg(a, n, "time");
      if (t && (tars_parse_double(t, &act->time) || act->time < 0 || act->time > 60)) {
        seterr(err, errlen, "long_press time \"%s\" is not a number of seconds in 0..60 in \"%s\"", t, ex);
        return -1;
      }
      return 0;
    }
    case TARS_DRAG:
      if (get_point(act, a, n, "start_box", &act->start, 1, sp, err, errlen)) return -1;
      return get_point(act, a, n, "end_box", &act->end, 1, sp, err, errlen);
    case TARS_HOTKEY: case TARS_KEY_DOWN: case TARS_KEY_UP:
      if (get_keys(act, find_arg(a, n, "key"), err, errlen)) return -1;
      if (act->type != TARS_HOTKEY && act->nkeys != 1) {
        seterr(err, errlen, "%s takes one key in \"%s\"", tars_action_name(act->type), ex);
        return -1;
      }
      return 0;
    case TARS_TYPE: {
      const char *c = find_arg(a, n, "content");
      if (!c) c = find_arg(a, n, "text");
      if (!c) {
        seterr(err, errlen, "type needs content in \"%s\"", ex);
        return -1;
      }
      size_t len = strlen(c);
      if (len && c[len - 1] == '\n') {
        act->enter = 1;
        len--;
      }
      act->text = strndup(c, len);
      if (!act->text) return -1;
      return get_point(act, a, n, "start_box", &act->start, 0, sp, err, errlen);
    }
    case TARS_SCROLL: {
      if (get_point(act, a, n, "start_box", &act->start, 0, sp, err, errlen)) return -1;
      if (get_point(act, a, n, "end_box", &act->end, 0, sp, err, errlen)) return -1;
      const char *d = find_arg(a, n, "direction");
      if (!d) {
        if (act->end.has && act->start.has) return 0; /* 1.0 mobile swipe */
        seterr(err, errlen, "scroll needs direction (up, down, left, right) in \"%s\"", ex);
        return -1;
      }
      char dn[16];
      size_t k = 0;
      for (const char *p = d; *p && k < sizeof dn - 1; p++)
        if (!isspace((unsigned char)*p)) dn[k++] = (char)tolower((unsigned char)*p);
      dn[k] = 0;
      for (int i = TARS_DIR_UP; i <= TARS_DIR_RIGHT; i++)
        if (!strcmp(dn, tars_direction_name((tars_direction)i))) act->direction = (tars_direction)i;
      if (act->direction == TARS_DIR_NONE) {
        seterr(err, errlen, "scroll direction \"%s\" is not up, down, left or right in \"%s\"", d, ex);
        return -1;
      }
      return 0;
    }
    case TARS_FINISHED: case TARS_NAVIGATE: {
      const char *c = find_arg(a, n, "content");
      if (!c && act->type == TARS_NAVIGATE) c = find_arg(a, n, "url");
      if (!c && act->type == TARS_NAVIGATE) {
        seterr(err, errlen, "navigate needs content in \"%s\"", ex);
        return -1;
      }
      if (c && !(act->text = strdup(c))) return -1;
      return 0;
    }
    case TARS_OPEN_APP: {
      const char *c = find_arg(a, n, "app_name");
      if (!c || !*c) {
        seterr(err, errlen, "open_app needs app_name in \"%s\"", ex);
        return -1;
      }
      return (act->text = strdup(c)) ? 0 : -1;
    }
    default:
      return 0;
  }
}

/* Finds the last "Action:" / "Action：" marker that is not inside a quoted value of an earlier block.
 * Returns the position of the marker and its length in *mlen, or NULL; *first gets the first marker. */
static const char *find_action_marker(const char *s, size_t *mlen, const char **first) {
  static const char FW[] = "Action\xEF\xBC\x9A"; /* full-width colon U+FF1A */
  const char *best = NULL;
  size_t bestlen = 0;
  const char *p = s;
  char q = 0;
  while (*p) {
    if (q) {
      if (*p == '\\' && p[1]) {
        p += 2;
        continue;
      }
      if (*p == q && closes_value(p, p + strlen(p))) q = 0;
      p++;
      continue;
    }
    size_t ml = 0;
    if (!strncmp(p, "Action:", 7)) ml = 7;
    else if (!strncmp(p, FW, sizeof FW - 1)) ml = sizeof FW - 1;
    if (ml && (p == s || !is_ident(p[-1]))) {
      if (!best) *first = p;
      best = p;
      bestlen = ml;
      p += ml;
      continue;
    }
    /* quotes only count inside an action block, after key= */
    if (best && (*p == '\'' || *p == '"')) {
      const char *b = p - 1;
      while (b > best && isspace((unsigned char)*b)) b--;
      if (*b == '=') q = *p;
    }
    p++;
  }
  *mlen = bestlen;
  return best;
}

static char *trimmed_dup(const char *s, const char *e) {
  while (s < e && isspace((unsigned char)*s)) s++;
  while (e > s && isspace((unsigned char)e[-1])) e--;
  return strndup(s, (size_t)(e - s));
}

static const char *find_in(const char *s, const char *e, const char *needle) {
  size_t nl = strlen(needle);
  for (const char *p = s; p + nl <= e; p++)
    if (!strncmp(p, needle, nl)) return p;
  return NULL;
}

int tars_parse_reply(const char *text, const tars_space *sp, tars_reply *out, char *err, int errlen) {
  memset(out, 0, sizeof *out);
  const char *s = text, *end = text + strlen(text);
  while (s < end && isspace((unsigned char)*s)) s++;
  while (end > s && isspace((unsigned char)end[-1])) end--;
  char *body = strndup(s, (size_t)(end - s));
  if (!body) return -1;
  s = body;
  end = body + strlen(body);
  /* end-of-turn tokens a server left in the text are dropped */
  static const char *const EOT[] = {"<|im_end|>", "<|endoftext|>", "</s>"};
  for (int again = 1; again;) {
    again = 0;
    for (size_t k = 0; k < sizeof EOT / sizeof EOT[0]; k++) {
      size_t l = strlen(EOT[k]);
      if ((size_t)(end - s) >= l && !strncmp(end - l, EOT[k], l)) {
        end -= l;
        while (end > s && isspace((unsigned char)end[-1])) end--;
        *(char *)end = 0;
        again = 1;
      }
    }
  }
  /* a leading <think>...</think> block is ignored */
  if (!strncmp(s, "<think>", 7)) {
    const char *c = strstr(s, "</think>");
    if (c) s = c + 8;
  }
  size_t mlen;
  const char *first = NULL;
  const char *marker = find_action_marker(s, &mlen, &first);
  const char *as;
  if (marker) {
    as = marker + mlen;
    /* thought part: up to the first marker (only the last block's actions are kept) */
    const char *pe = first;
    const char *refl = find_in(s, pe, "Reflection:");
    const char *summ = find_in(s, pe, "Action_Summary:");
    const char *th = find_in(s, pe, "Thought:");
    if (refl && (!summ || refl < summ)) {
      out->reflection = trimmed_dup(refl + 11, summ ? summ : pe);
      if (summ) out->thought = trimmed_dup(summ + 15, pe);
    } else if (summ) {
      out->thought = trimmed_dup(summ + 15, pe);
    } else if (th) {
      out->thought = trimmed_dup(th + 8, pe);
    }
    /* text before the marker with no label is not a thought: null, as the reference parser (UI-TARS
     * parse_action_to_structure_output finds no "Thought: " and keeps None) */
  } else {
    const char *p = s;
    while (p < end && isspace((unsigned char)*p)) p++;
    const char *q = p;
    while (q < end && is_ident(*q)) q++;
    const char *r = skip_ws(q, end);
    if (q == p || r >= end || *r != '(') {
      char ex[80];
      excerpt(s, (size_t)(end - s), ex, sizeof ex);
      seterr(err, errlen, "no action in the reply \"%s\"", ex);
      free(body);
      return -1;
    }
    as = p;
  }
  out->action_text = trimmed_dup(as, end);
  const char *p = out->action_text, *e = p + strlen(p);
  int cap = 0;
  for (;;) {
    p = skip_ws(p, e);
    if (p >= e) break;
    if (out->n == cap) {
      cap = cap ? cap * 2 : 4;
      tars_action *na = realloc(out->actions, (size_t)cap * sizeof *na);
      if (!na) goto fail;
      out->actions = na;
    }
    tars_action *act = &out->actions[out->n];
    memset(act, 0, sizeof *act);
    char name[40];
    arg_t args[MAX_ARGS];
    int nargs;
    const char *st = p;
    if (parse_call(&p, e, name, sizeof name, args, &nargs, err, errlen)) goto fail;
    act->raw = trimmed_dup(st, p);
    out->n++;
    int rc = act->raw ? build_action(act, name, args, nargs, sp, err, errlen) : -1;
    free_args(args, nargs);
    if (rc) goto fail;
  }
  if (out->n == 0) {
    seterr(err, errlen, "no action after \"Action:\"");
    goto fail;
  }
  free(body);
  return 0;
fail:
  free(body);
  tars_reply_free(out);
  return -1;
}

void tars_reply_free(tars_reply *r) {
  for (int i = 0; i < r->n; i++) action_free(&r->actions[i]);
  free(r->actions);
  free(r->thought);
  free(r->reflection);
  free(r->action_text);
  memset(r, 0, sizeof *r);
}

char *tars_add_box_tokens(const char *reply) {
  size_t mlen;
  const char *first = NULL;
  const char *marker = find_action_marker(reply, &mlen, &first);
  tars_buf b = {0};
  if (tars_buf_add(&b, "", 0)) return NULL;
  const char *p = reply, *from = marker ? marker + mlen : reply; /* no marker: the whole reply is the action */
  if (tars_buf_add(&b, p, (size_t)(from - p))) goto fail;
  for (p = from; *p;) {
    size_t kl = !strncmp(p, "start_box='(", 12) ? 12 : !strncmp(p, "end_box='(", 10) ? 10 : 0;
    if (kl && (p == from || !is_ident(p[-1]))) {
      const char *q = p + kl;
      size_t d1 = strspn(q, "0123456789");
      size_t d2 = d1 && q[d1] == ',' ? strspn(q + d1 + 1, "0123456789") : 0;
      if (d2 && !strncmp(q + d1 + 1 + d2, ")'", 2)) {
        const char *close = q + d1 + 1 + d2; /* the ')' */
        if (tars_buf_add(&b, p, kl - 1) || tars_buf_adds(&b, "<|box_start|>") ||
            tars_buf_add(&b, q - 1, (size_t)(close - q) + 2) || tars_buf_adds(&b, "<|box_end|>"))
          goto fail;
        p = close + 1;
        continue;
      }
    }
    if (tars_buf_add(&b, p, 1)) goto fail;
    p++;
  }
  return b.data;
fail:
  tars_buf_free(&b);
  return NULL;
}

/* ---------- JSON ---------- */

static cJSON *num3(double v) {
  char b[64];
  snprintf(b, sizeof b, "%.3f", v);
  char *d = b + strlen(b) - 1;
  while (*d == '0') *d-- = 0;
  if (*d == '.') *d = 0;
  if (!strcmp(b, "-0")) strcpy(b, "0");
  return cJSON_CreateRaw(b);
}

static void add_point(cJSON *o, const char *prefix, const tars_point *p) {
  char k[32];
  snprintf(k, sizeof k, "%sx", prefix);
  cJSON_AddNumberToObject(o, k, p->x);
  snprintf(k, sizeof k, "%sy", prefix);
  cJSON_AddNumberToObject(o, k, p->y);
  cJSON *s = cJSON_CreateArray();
  cJSON_AddItemToArray(s, num3(p->sx));
  cJSON_AddItemToArray(s, num3(p->sy));
  snprintf(k, sizeof k, "%sscreen", prefix);
  cJSON_AddItemToObject(o, k, s);
  cJSON *b = cJSON_CreateArray();
  for (int i = 0; i < (p->n == 4 ? 4 : 2); i++) cJSON_AddItemToArray(b, num3(p->box[i]));
  snprintf(k, sizeof k, "%smodel", prefix);
  cJSON_AddItemToObject(o, k, b);
  if (p->clamped) {
    snprintf(k, sizeof k, "%sclamped", prefix);
    cJSON_AddTrueToObject(o, k);
  }
}

static void add_str_or_null(cJSON *o, const char *k, const char *v) {
  if (v) cJSON_AddStringToObject(o, k, v);
  else cJSON_AddNullToObject(o, k);
}

char *tars_reply_to_json(const tars_reply *r) {
  cJSON *root = cJSON_CreateObject();
  if (!root) return NULL;
  add_str_or_null(root, "thought", r->thought);
  add_str_or_null(root, "reflection", r->reflection);
  cJSON *arr = cJSON_AddArrayToObject(root, "actions");
  for (int i = 0; i < r->n; i++) {
    const tars_action *a = &r->actions[i];
    cJSON *o = cJSON_CreateObject();
    cJSON_AddItemToArray(arr, o);
    cJSON_AddStringToObject(o, "type", tars_action_name(a->type));
    if (a->start.has) add_point(o, "", &a->start);
    if (a->end.has) add_point(o, "end_", &a->end);
    switch (a->type) {
      case TARS_TYPE:
        cJSON_AddStringToObject(o, "text", a->text ? a->text : "");
        cJSON_AddBoolToObject(o, "enter", a->enter);
        break;
      case TARS_HOTKEY: case TARS_KEY_DOWN: case TARS_KEY_UP: {
        cJSON *k = cJSON_AddArrayToObject(o, "keys");
        for (int j = 0; j < a->nkeys; j++) cJSON_AddItemToArray(k, cJSON_CreateString(a->keys[j]));
        break;
      }
      case TARS_SCROLL:
        if (a->direction != TARS_DIR_NONE) {
          cJSON_AddStringToObject(o, "direction", tars_direction_name(a->direction));
          cJSON_AddNumberToObject(o, "button", 3 + a->direction);
          cJSON_AddNumberToObject(o, "clicks", TARS_SCROLL_CLICKS);
        }
        break;
      case TARS_FINISHED: case TARS_NAVIGATE:
        add_str_or_null(o, "content", a->text);
        break;
      case TARS_OPEN_APP:
        cJSON_AddStringToObject(o, "app_name", a->text);
        break;
      case TARS_LONG_PRESS:
        if (a->time > 0) cJSON_AddItemToObject(o, "time", num3(a->time));
        break;
      default:
        break;
    }
  }
  char *s = cJSON_PrintUnformatted(root);
  cJSON_Delete(root);
  return s;
}
