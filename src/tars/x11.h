/* X11 screen capture (XGetImage, MIT-SHM when available) and input (XTest) for tars. */
#ifndef TARS_X11_H
#define TARS_X11_H

#include "image.h"
#include "parse.h"

typedef struct tars_x11 tars_x11;

/* Opens the display named by display_name (NULL = $DISPLAY). Returns NULL with one line in err when there
 * is no DISPLAY, the display cannot be opened, or the XTEST extension is missing. Setting the environment
 * variable TARS_NO_SHM=1 disables the MIT-SHM capture path. */
tars_x11 *tars_x11_open(const char *display_name, char *err, int errlen);
/* Restores the spare keycodes it bound (500 ms after their last key event, so clients read those events
 * first) and closes the display. */
void tars_x11_close(tars_x11 *x);

/* Root window size in pixels (the coordinate space of both capture and XTest input). */
void tars_x11_size(const tars_x11 *x, int *w, int *h);

/* Captures the whole root window into out (RGB, root pixels) with XShmGetImage when MIT-SHM works, else
 * XGetImage (ZPixmap); any TrueColor visual masks are handled. Returns 0, or -1 with err. */
int tars_x11_capture(tars_x11 *x, tars_image *out, char *err, int errlen);
/* 1 when the last capture used MIT-SHM. */
int tars_x11_used_shm(const tars_x11 *x);
/* Why the last capture did not use MIT-SHM, one line ("TARS_NO_SHM is set", "the display has no MIT-SHM
 * extension", "XShmAttach failed (X error 10, BadAccess: ...)", ...), or NULL when it did or no capture ran. */
const char *tars_x11_shm_why(const tars_x11 *x);

/* Performs one action with XTest at its mapped screen coordinates (reference/uitars.md 2.4-2.6):
 * click = motion, 30 ms pause, button 1; left_double = two clicks 80 ms apart; right_single = button 3; middle = 2;
 * hover = motion; drag = press 1 at start, 10 intermediate motions, release at end; scroll = motion to the
 * point (when given) and 5 clicks of button 4/5/6/7 for up/down/left/right (a 1.0 mobile swipe = drag);
 * hotkey = press keys in order, release in reverse; press/release = one key down/up; type = every code
 * point (keysym from the keymap, Shift when the keysym is on level 1, else a slot = one of the 2 levels of a
 * spare keycode bound to the keysym: code point < 0x100, else 0x01000000 + code point; all bound before the
 * first key when they fit, else in batches; a slot is rebound only 500 ms after its last key event, docs/TARS.md),
 * Return for each newline, Return at the end when the content ended with
 * a newline; long_press = button 1 held for time s (default 1 s).
 * XSync after each action. Mobile/browser actions (open_app, press_home, press_back, navigate,
 * navigate_back) return -1 with err: X11 has no counterpart. Returns 0, or -1 with err. */
int tars_x11_execute(tars_x11 *x, const tars_action *a, char *err, int errlen);

/* Whether tars_x11_execute can perform a (0), or -1 with err naming the action X11 has no counterpart for
 * (open_app, press_home, press_back, navigate, navigate_back). Needs no display. */
int tars_x11_can_execute(const tars_action *a, char *err, int errlen);

/* The executor, its check and capture with the signatures of tars_env (ctx = tars_x11 *). */
int tars_x11_env_can_execute(void *ctx, const tars_action *a, char *err, int errlen);
int tars_x11_env_capture(void *ctx, tars_image *out, char *err, int errlen);
int tars_x11_env_execute(void *ctx, const tars_action *a, char *err, int errlen);

#endif
