#define _DEFAULT_SOURCE /* shmget/shmat (XSI) next to the project-wide _POSIX_C_SOURCE */
#include "x11.h"

#include <X11/XKBlib.h>
#include <X11/Xlib.h>
#include <X11/Xutil.h>
#include <X11/extensions/XShm.h>
#include <X11/extensions/XTest.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/shm.h>
#include <time.h>

#include "util.h"

#define SCRATCH_MAX 256
#define LEVELS 2 /* keysyms per spare keycode: level 0 typed plain, level 1 with Shift */
#define SLOT_MAX (LEVELS * SCRATCH_MAX)
/* A slot (a level of a spare keycode) whose key event reached the server less than REBIND_WAIT_MS ago is not
 * rebound: X clients look keysyms up when they process an event, so a client that has not read the event yet
 * would decode the new keysym. */
#define REBIND_WAIT_MS 500
#define BIND_WAIT_MS 30

struct tars_x11 {
  Display *dpy;
  int screen;
  Window root;
  int w, h;
  int shm_ok, used_shm;
  char shm_why[160]; /* why MIT-SHM is not used ("" while it is or has not been tried) */
  int min_kc, max_kc;
  /* spare keycodes (all keysyms NoSymbol at open); slot s is level s % levels of keycode scratch[s / levels]:
   * the keysym bound there now, when it was last chosen (clock), when a key event last used it (monotonic ms,
   * 0 = never) */
  KeyCode scratch[SCRATCH_MAX];
  KeySym bound[SLOT_MAX];
  unsigned long stamp[SLOT_MAX], clock;
  long long pressed_at[SLOT_MAX];
  int nscratch, levels, nslots, any_bound;
};

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Milliseconds until slot s may be rebound (0 = now). */
static long rebind_wait(const struct tars_x11 *x, int s, long long now) {
  if (!x->pressed_at[s]) return 0;
  long long left = x->pressed_at[s] + REBIND_WAIT_MS - now;
  return left > 0 ? (long)left : 0;
}

static int x_error_code;
static int on_x_error(Display *d, XErrorEvent *e) {
  (void)d;
  x_error_code = e->error_code;
  return 0;
}

tars_x11 *tars_x11_open(const char *display_name, char *err, int errlen) {
  const char *name = display_name ? display_name : getenv("DISPLAY");
  if (!name || !*name) {
    snprintf(err, errlen, "no X display: DISPLAY is not set");
    return NULL;
  }
  Display *dpy = XOpenDisplay(name);
  if (!dpy) {
    snprintf(err, errlen, "cannot open X display \"%s\"", name);
    return NULL;
  }
  int ev, er, maj, min;
  if (!XTestQueryExtension(dpy, &ev, &er, &maj, &min)) {
    snprintf(err, errlen, "X display \"%s\" has no XTEST extension", name);
    XCloseDisplay(dpy);
    return NULL;
  }
  tars_x11 *x = calloc(1, sizeof *x);
  if (!x) {
    XCloseDisplay(dpy);
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  x->dpy = dpy;
  x->screen = DefaultScreen(dpy);
  x->root = RootWindow(dpy, x->screen);
  x->w = DisplayWidth(dpy, x->screen);
  x->h = DisplayHeight(dpy, x->screen);
  const char *noshm = getenv("TARS_NO_SHM");
  x->shm_ok = 0;
  if (noshm && *noshm && strcmp(noshm, "0")) snprintf(x->shm_why, sizeof x->shm_why, "TARS_NO_SHM is set");
  else if (!XShmQueryExtension(dpy)) snprintf(x->shm_why, sizeof x->shm_why, "the display has no MIT-SHM extension");
  else x->shm_ok = 1;
  XDisplayKeycodes(dpy, &x->min_kc, &x->max_kc);
  int per = 0, count = x->max_kc - x->min_kc + 1;
  KeySym *map = XGetKeyboardMapping(dpy, (KeyCode)x->min_kc, count, &per);
  /* spare keycodes from the top down (the low ones are the physical keys) */
  for (int kc = x->max_kc; map && kc >= x->min_kc && x->nscratch < SCRATCH_MAX; kc--) {
    int empty = 1;
    for (int j = 0; j < per; j++)
      if (map[(kc - x->min_kc) * per + j] != NoSymbol) empty = 0;
    if (empty) x->scratch[x->nscratch++] = (KeyCode)kc;
  }
  if (map) XFree(map);
  /* the second level needs a Shift key to reach it */
  x->levels = XKeysymToKeycode(dpy, XK_Shift_L) ? LEVELS : 1;
  x->nslots = x->nscratch * x->levels;
  if (getenv("TARS_DEBUG_KEYS")) fprintf(stderr, "tars: %d spare keycodes, %d slots\n", x->nscratch, x->nslots);
  XSetErrorHandler(on_x_error);
  return x;
}

void tars_x11_close(tars_x11 *x) {
  if (!x) return;
  if (x->any_bound) {
    /* let clients read the events that used the bindings before they go */
    XSync(x->dpy, False);
    long wait = 0;
    long long t = now_ms();
    for (int s = 0; s < x->nslots; s++)
      if (rebind_wait(x, s, t) > wait) wait = rebind_wait(x, s, t);
    tars_sleep_ms(wait);
    KeySym none[LEVELS] = {NoSymbol, NoSymbol};
    for (int i = 0; i < x->nscratch; i++) {
      int any = 0;
      for (int l = 0; l < x->levels; l++) any |= x->bound[i * x->levels + l] != NoSymbol;
      if (any) XChangeKeyboardMapping(x->dpy, x->scratch[i], x->levels, none, 1);
    }
    XSync(x->dpy, False);
  }
  XCloseDisplay(x->dpy);
  free(x);
}

void tars_x11_size(const tars_x11 *x, int *w, int *h) {
  *w = x->w;
  *h = x->h;
}

int tars_x11_used_shm(const tars_x11 *x) { return x->used_shm; }

const char *tars_x11_shm_why(const tars_x11 *x) { return x->used_shm || !x->shm_why[0] ? NULL : x->shm_why; }

static int mask_shift(unsigned long m) {
  int s = 0;
  if (!m) return 0;
  while (!(m & 1)) m >>= 1, s++;
  return s;
}

static int mask_bits(unsigned long m) {
  int n = 0;
  for (; m; m >>= 1) n += (int)(m & 1);
  return n;
}

static unsigned char channel(unsigned long px, unsigned long mask) {
  int s = mask_shift(mask), b = mask_bits(mask);
  if (!b) return 0;
  unsigned long v = (px & mask) >> s, max = (1UL << b) - 1;
  return (unsigned char)((v * 255 + max / 2) / max);
}

static int convert(XImage *img, tars_image *out) {
  if (tars_image_alloc(out, img->width, img->height)) return -1;
  int fast = img->bits_per_pixel == 32 && img->byte_order == LSBFirst && img->red_mask == 0xff0000 &&
             img->green_mask == 0xff00 && img->blue_mask == 0xff;
  for (int y = 0; y < img->height; y++) {
    unsigned char *o = out->rgb + (size_t)y * (size_t)img->width * 3;
    if (fast) {
      const unsigned char *r = (const unsigned char *)img->data + (size_t)y * (size_t)img->bytes_per_line;
      for (int xx = 0; xx < img->width; xx++, r += 4, o += 3) {
        o[0] = r[2];
        o[1] = r[1];
        o[2] = r[0];
      }
    } else {
      for (int xx = 0; xx < img->width; xx++, o += 3) {
        unsigned long px = XGetPixel(img, xx, y);
        o[0] = channel(px, img->red_mask);
        o[1] = channel(px, img->green_mask);
        o[2] = channel(px, img->blue_mask);
      }
    }
  }
  return 0;
}

static int capture_shm(tars_x11 *x, tars_image *out) {
  XShmSegmentInfo si;
  memset(&si, 0, sizeof si);
  Visual *vis = DefaultVisual(x->dpy, x->screen);
  XImage *img = XShmCreateImage(x->dpy, vis, (unsigned)DefaultDepth(x->dpy, x->screen), ZPixmap, NULL, &si,
                                (unsigned)x->w, (unsigned)x->h);
  if (!img) {
    snprintf(x->shm_why, sizeof x->shm_why, "XShmCreateImage failed");
    return -1;
  }
  si.shmid = shmget(IPC_PRIVATE, (size_t)img->bytes_per_line * (size_t)img->height, IPC_CREAT | 0600);
  if (si.shmid < 0) {
    snprintf(x->shm_why, sizeof x->shm_why, "shmget: %s", strerror(errno));
    XDestroyImage(img);
    return -1;
  }
  si.shmaddr = img->data = shmat(si.shmid, NULL, 0);
  if (si.shmaddr == (char *)-1) {
    snprintf(x->shm_why, sizeof x->shm_why, "shmat: %s", strerror(errno));
    shmctl(si.shmid, IPC_RMID, NULL);
    img->data = NULL;
    XDestroyImage(img);
    return -1;
  }
  si.readOnly = False;
  x_error_code = 0;
  int rc = -1;
  if (XShmAttach(x->dpy, &si)) {
    XSync(x->dpy, False);
    shmctl(si.shmid, IPC_RMID, NULL);
    if (!x_error_code) {
      if (XShmGetImage(x->dpy, x->root, img, 0, 0, AllPlanes) && !x_error_code) {
        rc = convert(img, out);
        if (rc) snprintf(x->shm_why, sizeof x->shm_why, "out of memory");
      } else {
        snprintf(x->shm_why, sizeof x->shm_why, "XShmGetImage failed (X error %d)", x_error_code);
      }
      XShmDetach(x->dpy, &si);
      XSync(x->dpy, False);
    } else {
      snprintf(x->shm_why, sizeof x->shm_why, "XShmAttach failed (X error %d%s)", x_error_code,
               x_error_code == BadAccess ? ", BadAccess: the server cannot reach this process's shared memory" : "");
    }
  } else {
    snprintf(x->shm_why, sizeof x->shm_why, "XShmAttach failed");
    shmctl(si.shmid, IPC_RMID, NULL);
  }
  shmdt(si.shmaddr);
  img->data = NULL;
  XDestroyImage(img);
  return rc;
}

int tars_x11_capture(tars_x11 *x, tars_image *out, char *err, int errlen) {
  x->used_shm = 0;
  if (x->shm_ok) {
    if (capture_shm(x, out) == 0) {
      x->used_shm = 1;
      return 0;
    }
    x->shm_ok = 0; /* remote display or BadAccess: plain XGetImage from now on */
  }
  x_error_code = 0;
  XImage *img = XGetImage(x->dpy, x->root, 0, 0, (unsigned)x->w, (unsigned)x->h, AllPlanes, ZPixmap);
  if (!img) {
    snprintf(err, errlen, "XGetImage of the %dx%d root window failed (X error %d)", x->w, x->h, x_error_code);
    return -1;
  }
  int rc = convert(img, out);
  XDestroyImage(img);
  if (rc) snprintf(err, errlen, "out of memory converting the screenshot");
  return rc;
}

/* ---------- input ---------- */

static void motion(tars_x11 *x, int px, int py) { XTestFakeMotionEvent(x->dpy, -1, px, py, CurrentTime); }

static void button(tars_x11 *x, unsigned b, int down) { XTestFakeButtonEvent(x->dpy, b, down ? True : False, CurrentTime); }

/* Pointer motion, then a short pause so the target sees the pointer arrive (hover effects, enter events)
 * before a button goes down; nut-js waits 100 ms before clicks. */
#define SETTLE_MS 30
static void move_settle(tars_x11 *x, int px, int py) {
  motion(x, px, py);
  XSync(x->dpy, False);
  tars_sleep_ms(SETTLE_MS);
}

static void click(tars_x11 *x, unsigned b) {
  button(x, b, 1);
  button(x, b, 0);
}

/* Keycode and Shift need of a keysym in group 0 of the current keymap (levels 0 and 1), or 0. */
static KeyCode keymap_lookup(tars_x11 *x, KeySym ks, int *shift) {
  *shift = 0;
  KeyCode kc = XKeysymToKeycode(x->dpy, ks);
  if (!kc) return 0;
  for (int i = 0; i < x->nscratch; i++)
    if (x->scratch[i] == kc) return 0; /* our own binding is not "the keymap" */
  if (XkbKeycodeToKeysym(x->dpy, kc, 0, 0) == ks) return kc;
  if (XkbKeycodeToKeysym(x->dpy, kc, 0, 1) == ks) {
    *shift = 1;
    return kc;
  }
  return 0;
}

static int bound_slot(const tars_x11 *x, KeySym ks) {
  for (int i = 0; i < x->nslots; i++)
    if (x->bound[i] == ks) return i;
  return -1;
}

/* Puts every keysym of ks[0..n) that the keymap lacks into a slot (a level of a spare keycode), changing
 * the keyboard mapping in one go. Keysyms already in a slot stay there; a new one takes, in this order of
 * preference, an empty slot, a slot that may be rebound now, or the slot whose REBIND_WAIT_MS runs out
 * first (least recently chosen among equals; level 0 before level 1); tars waits (after XSync) until every
 * slot it rebinds has had REBIND_WAIT_MS since its last key event. After the change, XSync and a
 * BIND_WAIT_MS pause so clients have the new map before the first key event (Xlib clients refresh their
 * keymap from the MappingNotify lazily). Returns 0, or -1 when the keysyms outnumber the slots. */
static int ensure_bound(tars_x11 *x, const KeySym *ks, int n) {
  unsigned char keep[SLOT_MAX] = {0};
  KeySym assign[SLOT_MAX];
  int shift, changes = 0;
  long wait = 0;
  long long now = now_ms();
  for (int i = 0; i < x->nslots; i++) assign[i] = NoSymbol;
  for (int i = 0; i < n; i++) {
    int s = bound_slot(x, ks[i]);
    if (s >= 0) keep[s] = 1;
  }
  for (int i = 0; i < n; i++) {
    if (keymap_lookup(x, ks[i], &shift) || bound_slot(x, ks[i]) >= 0) continue;
    int dup = 0;
    for (int j = 0; j < x->nslots; j++)
      if (assign[j] == ks[i]) dup = 1;
    if (dup) continue;
    int slot = -1;
    long best = 0;
    for (int j = 0; j < x->nslots; j++) {
      if (keep[j] || assign[j] != NoSymbol) continue;
      long w = rebind_wait(x, j, now);
      /* rank: empty < free now < waiting (shorter first); then older choice, then lower level */
      long rank = x->bound[j] == NoSymbol ? 0 : w == 0 ? 1 : 2 + w;
      if (slot < 0 || rank < best ||
          (rank == best && (x->stamp[j] < x->stamp[slot] ||
                            (x->stamp[j] == x->stamp[slot] && j % x->levels < slot % x->levels)))) {
        slot = j;
        best = rank;
      }
    }
    if (slot < 0) return -1;
    keep[slot] = 1;
    assign[slot] = ks[i];
    changes++;
    if (rebind_wait(x, slot, now) > wait) wait = rebind_wait(x, slot, now);
  }
  if (!changes) return 0;
  if (wait) {
    XSync(x->dpy, False);
    tars_sleep_ms(wait);
  }
  for (int k = 0; k < x->nscratch; k++) {
    int touched = 0;
    KeySym syms[LEVELS];
    for (int l = 0; l < x->levels; l++) {
      int s = k * x->levels + l;
      if (assign[s] != NoSymbol) {
        x->bound[s] = assign[s];
        x->pressed_at[s] = 0;
        touched = 1;
      }
      syms[l] = x->bound[s];
    }
    /* an empty level 1 repeats level 0, so a held Shift cannot change the symbol */
    if (x->levels == 2 && syms[1] == NoSymbol) syms[1] = syms[0];
    if (touched) XChangeKeyboardMapping(x->dpy, x->scratch[k], x->levels, syms, 1);
  }
  x->any_bound = 1;
  XSync(x->dpy, False);
  tars_sleep_ms(BIND_WAIT_MS);
  return 0;
}

/* Keycode and Shift need of a keysym, binding a slot when the keymap lacks it; *slot gets the slot or -1.
 * 0 when impossible. */
static KeyCode keycode_for(tars_x11 *x, KeySym ks, int *shift, int *slot) {
  *slot = -1;
  KeyCode kc = keymap_lookup(x, ks, shift);
  if (kc) return kc;
  if (bound_slot(x, ks) < 0 && ensure_bound(x, &ks, 1)) return 0;
  int s = bound_slot(x, ks);
  if (s < 0) return 0;
  x->stamp[s] = ++x->clock;
  *slot = s;
  *shift = s % x->levels;
  return x->scratch[s / x->levels];
}

static int key_event(tars_x11 *x, KeySym ks, int down, char *err, int errlen) {
  int shift, slot;
  KeyCode kc = keycode_for(x, ks, &shift, &slot);
  if (!kc) {
    snprintf(err, errlen, "no keycode for keysym 0x%lx", (unsigned long)ks);
    return -1;
  }
  KeyCode sh = shift ? XKeysymToKeycode(x->dpy, XK_Shift_L) : 0;
  if (down && sh) XTestFakeKeyEvent(x->dpy, sh, True, CurrentTime);
  XTestFakeKeyEvent(x->dpy, kc, down ? True : False, CurrentTime);
  if (!down && sh) XTestFakeKeyEvent(x->dpy, sh, False, CurrentTime);
  if (slot >= 0) x->pressed_at[slot] = now_ms();
  return 0;
}

static int tap(tars_x11 *x, KeySym ks, char *err, int errlen) {
  if (key_event(x, ks, 1, err, errlen)) return -1;
  key_event(x, ks, 0, err, errlen);
  XSync(x->dpy, False);
  return 0;
}

static int type_text(tars_x11 *x, const char *s, int enter, char *err, int errlen) {
  /* decode everything first: invalid UTF-8 types nothing */
  size_t n = strlen(s);
  KeySym *ks = malloc(sizeof *ks * (n + 1));
  int m = 0;
  if (!ks) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  for (size_t i = 0; i < n;) {
    unsigned long cp;
    int k = tars_utf8_next(s + i, n - i, &cp);
    if (k < 0) {
      snprintf(err, errlen, "invalid UTF-8 in the text at byte %zu", i);
      free(ks);
      return -1;
    }
    i += (size_t)k;
    if (cp == '\n') ks[m++] = XK_Return;
    else if (cp == '\t') ks[m++] = XK_Tab;
    else if (cp < 0x20 || cp == 0x7f) continue; /* other control characters have no key */
    else if (cp < 0x100) ks[m++] = (KeySym)cp;
    else ks[m++] = (KeySym)(0x01000000UL + cp);
  }
  if (enter) ks[m++] = XK_Return;
  /* Batches with at most as many distinct missing keysyms as there are slots, each bound in one go: a text
   * that fits (2 per spare keycode, keysyms already bound reused) never rebinds a slot it used; a longer one
   * rebinds slots of the previous batch REBIND_WAIT_MS after their last key event (docs/TARS.md, limits). */
  int rc = 0;
  for (int i = 0; i < m && !rc;) {
    KeySym missing[SCRATCH_MAX];
    int nm = 0, j = i, shift;
    for (; j < m; j++) {
      if (keymap_lookup(x, ks[j], &shift)) continue;
      int seen = 0;
      for (int q = 0; q < nm; q++) seen |= missing[q] == ks[j];
      if (seen) continue;
      if (nm == x->nslots) break;
      missing[nm++] = ks[j];
    }
    if (j == i || (nm && ensure_bound(x, missing, nm))) { /* j == i: the keymap has no spare keycode */
      snprintf(err, errlen, "no spare keycode to type keysym 0x%lx", (unsigned long)(nm ? missing[0] : ks[i]));
      rc = -1;
    }
    for (; i < j && !rc; i++) rc = tap(x, ks[i], err, errlen);
  }
  free(ks);
  return rc;
}

static void drag(tars_x11 *x, const tars_point *a, const tars_point *b) {
  move_settle(x, a->x, a->y);
  button(x, 1, 1);
  XSync(x->dpy, False);
  for (int i = 1; i <= 10; i++) {
    motion(x, a->x + (b->x - a->x) * i / 10, a->y + (b->y - a->y) * i / 10);
    XSync(x->dpy, False);
    tars_sleep_ms(10);
  }
  button(x, 1, 0);
}

int tars_x11_can_execute(const tars_action *a, char *err, int errlen) {
  switch (a->type) {
    case TARS_OPEN_APP: case TARS_PRESS_HOME: case TARS_PRESS_BACK: case TARS_NAVIGATE: case TARS_NAVIGATE_BACK:
      snprintf(err, errlen, "%s has no X11 counterpart (a mobile or browser action)", tars_action_name(a->type));
      return -1;
    default:
      return 0;
  }
}

int tars_x11_execute(tars_x11 *x, const tars_action *a, char *err, int errlen) {
  int rc = 0;
  if (tars_x11_can_execute(a, err, errlen)) return -1;
  switch (a->type) {
    case TARS_CLICK: case TARS_RIGHT_SINGLE: case TARS_MIDDLE_CLICK:
      move_settle(x, a->start.x, a->start.y);
      click(x, a->type == TARS_CLICK ? 1 : a->type == TARS_RIGHT_SINGLE ? 3 : 2);
      break;
    case TARS_LEFT_DOUBLE:
      move_settle(x, a->start.x, a->start.y);
      click(x, 1);
      XSync(x->dpy, False);
      tars_sleep_ms(80);
      click(x, 1);
      break;
    case TARS_HOVER:
      motion(x, a->start.x, a->start.y);
      break;
    case TARS_DRAG:
      drag(x, &a->start, &a->end);
      break;
    case TARS_LONG_PRESS:
      move_settle(x, a->start.x, a->start.y);
      button(x, 1, 1);
      XSync(x->dpy, False);
      tars_sleep_ms(a->time > 0 ? (long)(a->time * 1000) : 1000);
      button(x, 1, 0);
      break;
    case TARS_SCROLL:
      if (a->direction == TARS_DIR_NONE) { /* 1.0 mobile swipe */
        drag(x, &a->start, &a->end);
        break;
      }
      if (a->start.has) move_settle(x, a->start.x, a->start.y);
      for (int i = 0; i < TARS_SCROLL_CLICKS; i++) click(x, 3u + (unsigned)a->direction);
      break;
    case TARS_HOTKEY: case TARS_KEY_DOWN: case TARS_KEY_UP: {
      KeySym ks[TARS_MAX_KEYS];
      for (int i = 0; i < a->nkeys; i++) {
        ks[i] = XStringToKeysym(a->keys[i]);
        if (ks[i] == NoSymbol) {
          snprintf(err, errlen, "unknown keysym %s", a->keys[i]);
          return -1;
        }
      }
      if (a->type != TARS_KEY_UP)
        for (int i = 0; i < a->nkeys && !rc; i++) rc = key_event(x, ks[i], 1, err, errlen);
      if (a->type != TARS_KEY_DOWN)
        for (int i = a->nkeys - 1; i >= 0; i--) key_event(x, ks[i], 0, err, errlen);
      break;
    }
    case TARS_TYPE:
      if (a->start.has) {
        move_settle(x, a->start.x, a->start.y);
        click(x, 1);
        XSync(x->dpy, False);
      }
      rc = type_text(x, a->text ? a->text : "", a->enter, err, errlen);
      break;
    case TARS_WAIT: case TARS_FINISHED: case TARS_CALL_USER: case TARS_ERROR_ENV: case TARS_MAX_LOOP:
    case TARS_USER_STOP:
      break;
    default:
      return -1;
  }
  XSync(x->dpy, False);
  return rc;
}

int tars_x11_env_capture(void *ctx, tars_image *out, char *err, int errlen) {
  return tars_x11_capture(ctx, out, err, errlen);
}

int tars_x11_env_can_execute(void *ctx, const tars_action *a, char *err, int errlen) {
  (void)ctx;
  return tars_x11_can_execute(a, err, errlen);
}

int tars_x11_env_execute(void *ctx, const tars_action *a, char *err, int errlen) {
  return tars_x11_execute(ctx, a, err, errlen);
}
