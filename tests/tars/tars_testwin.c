/* Test window for tars's X11 tests: a window covering the whole screen in colour BG with a filled
 * rectangle in colour FG at (100, 50) size 200x100, that records every pointer and key event it receives,
 * one line each, flushed at once:
 *   motion X Y | press B X Y | release B X Y | key_press NAME | key_release NAME
 * (root coordinates; NAME = the keysym of the key at the Shift level of the event, as XKeysymToString
 * spells it, e.g. "a", "A", "Return", "U5317"). Writes READY_FILE once it is mapped, drawn and focused.
 * usage: tars_testwin LOG_FILE READY_FILE [BG FG] (colours as 0xRRGGBB, TrueColor 24-bit visuals) */
#include <X11/Xlib.h>
#include <X11/Xutil.h>
#include <stdio.h>
#include <stdlib.h>

static unsigned long rgb_pixel(Visual *v, unsigned long rgb) {
  unsigned long p = 0, m[3] = {v->red_mask, v->green_mask, v->blue_mask};
  for (int c = 0; c < 3; c++) {
    unsigned long val = (rgb >> (16 - 8 * c)) & 0xff, mask = m[c];
    int shift = 0, bits = 0;
    while (mask && !(mask & 1)) mask >>= 1, shift++;
    while (mask & 1) mask >>= 1, bits++;
    p |= ((val * ((1UL << bits) - 1) + 127) / 255) << shift;
  }
  return p;
}

static const char *key_name(Display *d, XKeyEvent *e) {
  KeySym ks = XLookupKeysym(e, (e->state & ShiftMask) ? 1 : 0);
  if (ks == NoSymbol) ks = XLookupKeysym(e, 0);
  (void)d;
  const char *n = ks == NoSymbol ? NULL : XKeysymToString(ks);
  return n ? n : "NoSymbol";
}

int main(int argc, char **argv) {
  if (argc != 3 && argc != 5) {
    fprintf(stderr, "usage: tars_testwin LOG_FILE READY_FILE [BG FG]\n");
    return 2;
  }
  unsigned long bg = argc == 5 ? strtoul(argv[3], NULL, 0) : 0x336699, fg = argc == 5 ? strtoul(argv[4], NULL, 0) : 0xff8000;
  FILE *log = fopen(argv[1], "a");
  if (!log) return 1;
  Display *d = XOpenDisplay(NULL);
  if (!d) {
    fprintf(stderr, "tars_testwin: cannot open the display\n");
    return 1;
  }
  int s = DefaultScreen(d);
  Visual *v = DefaultVisual(d, s);
  XSetWindowAttributes a;
  a.override_redirect = True;
  a.background_pixel = rgb_pixel(v, bg);
  a.event_mask = ExposureMask | ButtonPressMask | ButtonReleaseMask | PointerMotionMask | KeyPressMask |
                 KeyReleaseMask | StructureNotifyMask;
  Window w = XCreateWindow(d, RootWindow(d, s), 0, 0, (unsigned)DisplayWidth(d, s), (unsigned)DisplayHeight(d, s), 0,
                           CopyFromParent, InputOutput, CopyFromParent, CWOverrideRedirect | CWBackPixel | CWEventMask, &a);
  GC gc = XCreateGC(d, w, 0, NULL);
  XSetForeground(d, gc, rgb_pixel(v, fg));
  XMapRaised(d, w);
  int ready = 0;
  for (;;) {
    XEvent e;
    XNextEvent(d, &e);
    switch (e.type) {
      case Expose:
        if (e.xexpose.count == 0) {
          XFillRectangle(d, w, gc, 100, 50, 200, 100);
          XSync(d, False);
          if (!ready) {
            XSetInputFocus(d, w, RevertToParent, CurrentTime);
            XSync(d, False);
            FILE *r = fopen(argv[2], "w");
            if (r) fclose(r);
            ready = 1;
          }
        }
        break;
      case MotionNotify:
        fprintf(log, "motion %d %d\n", e.xmotion.x_root, e.xmotion.y_root);
        break;
      case ButtonPress:
      case ButtonRelease:
        fprintf(log, "%s %u %d %d\n", e.type == ButtonPress ? "press" : "release", e.xbutton.button, e.xbutton.x_root,
                e.xbutton.y_root);
        break;
      case KeyPress:
      case KeyRelease:
        fprintf(log, "%s %s\n", e.type == KeyPress ? "key_press" : "key_release", key_name(d, &e.xkey));
        break;
      case MappingNotify:
        XRefreshKeyboardMapping(&e.xmapping);
        break;
      default:
        break;
    }
    fflush(log);
  }
}
