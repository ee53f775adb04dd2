/* Parser of UI-TARS model replies: Thought / Reflection / Action layout, action grammar, coordinate
 * forms, and the mapping of model coordinates to screen pixels. Facts: reference/uitars.md 1.1-1.3, 2.3. */
#ifndef TARS_PARSE_H
#define TARS_PARSE_H

#include <stddef.h>

#define TARS_MAX_KEYS 8
#define TARS_SCROLL_CLICKS 5
/* A fraction (model coordinate / factor) above this is an error; between 1 and it, clamped. */
#define TARS_MAX_OVERSHOOT 1.25

typedef enum {
  TARS_CLICK, TARS_LEFT_DOUBLE, TARS_RIGHT_SINGLE, TARS_MIDDLE_CLICK, TARS_HOVER, TARS_DRAG,
  TARS_HOTKEY, TARS_KEY_DOWN, TARS_KEY_UP, TARS_TYPE, TARS_SCROLL, TARS_WAIT, TARS_FINISHED,
  TARS_CALL_USER, TARS_LONG_PRESS, TARS_OPEN_APP, TARS_PRESS_HOME, TARS_PRESS_BACK, TARS_NAVIGATE,
  TARS_NAVIGATE_BACK, TARS_ERROR_ENV, TARS_MAX_LOOP, TARS_USER_STOP, TARS_ACTION_COUNT
} tars_action_type;

typedef enum { TARS_DIR_NONE, TARS_DIR_UP, TARS_DIR_DOWN, TARS_DIR_LEFT, TARS_DIR_RIGHT } tars_direction;

/* How model coordinates map to the screen (reference/uitars.md 1.1). */
typedef struct {
  int version;              /* 10 = UI-TARS 1.0 / Doubao (relative, factor 1000), 15 = UI-TARS-1.5 (absolute) */
  long width, height;       /* screen (root window) size in pixels */
  double wfactor, hfactor;  /* model units per full width / height: 1000 (1.0) or W', H' (1.5) */
} tars_space;

/* Fills sp for a model version (10 or 15) and a screen size; for 1.5 the factors are
 * smart_resize(height, width, min_pixels, max_pixels) (the image the server's processor produces from a
 * screenshot sent at screen size). Returns 0, or -1 with a message in err on a bad version or size. */
int tars_space_init(tars_space *sp, int version, long width, long height, long min_pixels, long max_pixels,
                    char *err, int errlen);

/* One point argument of an action, in three coordinate systems. */
typedef struct {
  int has;            /* 0 when the action has no such argument */
  int n;              /* 2 (point) or 4 (box) numbers were emitted */
  double box[4];      /* model units as emitted; a point (x, y) is stored as the box (x, y, x, y) */
  double fx, fy;      /* centre as fractions of the model's image: ((x1 + x2) / 2) / wfactor, ... */
  double sx, sy;      /* centre in screen pixels, unrounded: fx * width, fy * height */
  int x, y;           /* screen pixels: rounded to nearest, clamped to [0, W-1] x [0, H-1] */
  int clamped;        /* 1 when the clamp changed the rounded value */
} tars_point;

typedef struct {
  tars_action_type type;
  tars_point start, end;     /* start_box / end_box (end: drag, 1.0 mobile scroll = swipe) */
  char *text;                /* type: content without a dropped trailing newline; finished/navigate: content
                                (NULL when absent); open_app: app_name (UTF-8, escapes decoded) */
  int enter;                 /* type: the content ended in a newline -> press Return after typing */
  const char *keys[TARS_MAX_KEYS]; /* hotkey/press/release: X keysym names, in press order */
  int nkeys;
  tars_direction direction;  /* scroll */
  double time;               /* long_press: seconds, 0 when absent */
  char *raw;                 /* the action's text as the model wrote it */
} tars_action;

typedef struct {
  char *thought;     /* NULL when the reply has none */
  char *reflection;  /* NULL unless the 1.0 reflective layout is used */
  char *action_text; /* the text after the last Action: marker */
  tars_action *actions;
  int n;
} tars_reply;

/* Parses a model reply. sp gives the coordinate mapping (may be NULL: coordinates are then left in model
 * units with fx, fy, sx, sy, x, y zero). On success fills *out (free with tars_reply_free) and returns 0.
 * On a malformed reply returns -1 and writes one line to err naming the offending text, e.g.
 * "click's start_box is empty in \"click(start_box='')\"". Rules: reference/uitars.md 2.3 (the last
 * Action: block; Thought/Reflection/Action_Summary; actions split outside quoted values; Python escapes;
 * whole-key aliases; coordinates (x,y), (x1,y1,x2,y2), [..], <|box_start|>..<|box_end|>, <point>, <bbox>, bare). */
int tars_parse_reply(const char *text, const tars_space *sp, tars_reply *out, char *err, int errlen);

/* Frees what tars_parse_reply allocated and zeroes r. */
void tars_reply_free(tars_reply *r);

/* Parses a coordinate value (any form of reference/uitars.md 1.3) into 2 or 4 non-negative numbers stored
 * as a box (a point is duplicated). Returns the count (2 or 4), or -1 with err naming the value and the
 * invalid token's position. */
int tars_parse_coords(const char *value, double box[4], char *err, int errlen);

/* Maps p->box (model units) to fractions and screen pixels in sp. Returns 0, or -1 with err when the
 * point lies more than TARS_MAX_OVERSHOOT of the image beyond its edge. */
int tars_map_point(tars_point *p, const tars_space *sp, char *err, int errlen);

/* Decodes a Python string literal body (without quotes): \\ \' \" \n \t \r \a \b \f \v \ooo \xhh \uXXXX
 * \UXXXXXXXX; an unknown escape keeps its backslash, as Python does. Returns a malloc'ed UTF-8 string or
 * NULL (bad \x/\u escape or allocation failure). */
char *tars_decode_py_string(const char *s, size_t n);

/* The history form of a past reply: in the text after the last Action: marker, every start_box='(x,y)' and
 * end_box='(x,y)' (no spaces, integers, no box tokens yet) becomes start_box='<|box_start|>(x,y)<|box_end|>',
 * the form the models were trained on when the server strips special tokens from replies. Other text is
 * unchanged. Source: UI-TARS codes add_box_token, used by OSWorld's 1.5 agent on its history
 * (reference/uitars.md 2.8). Returns a malloc'ed string or NULL. */
char *tars_add_box_tokens(const char *reply);

/* The canonical action name ("click", "left_double", ...). */
const char *tars_action_name(tars_action_type t);
/* The direction's name ("up", ...), "" for none. */
const char *tars_direction_name(tars_direction d);

/* Prints the reply as one line of JSON to a malloc'ed string: {"thought":..,"reflection":..,"actions":[..]}
 * with per action: type, x, y (screen pixels), screen [sx, sy] (3 decimals), box (model units), end_*
 * for drags, text/enter, keys, direction/button/clicks, content, app_name, time. NULL on allocation failure. */
char *tars_reply_to_json(const tars_reply *r);

#endif
