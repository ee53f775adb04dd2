/* The agent loop: screenshot -> model -> parse -> act, until finished, call_user, the step limit, an error
 * or a stop request (reference/uitars.md 2.8). */
#ifndef TARS_AGENT_H
#define TARS_AGENT_H

#include <stdio.h>

#include "client.h"
#include "image.h"
#include "parse.h"
#include "prompt.h"

/* Consecutive screenshot failures that end a run (UI-TARS-desktop tolerates 10 over a run, 5 s apart). */
#define TARS_CAPTURE_TRIES 3

typedef enum { TARS_ST_RUNNING, TARS_ST_END, TARS_ST_CALL_USER, TARS_ST_MAX_LOOP, TARS_ST_USER_STOPPED, TARS_ST_ERROR } tars_status;

/* "running", "end", "call_user", "max_loop", "user_stopped", "error". */
const char *tars_status_name(tars_status s);

/* Where screenshots come from and where actions go. */
typedef struct {
  /* Fills *out with the current screen (RGB, screen pixels). Returns 0, or -1 with err. */
  int (*capture)(void *ctx, tars_image *out, char *err, int errlen);
  /* Performs one parsed action (screen coordinates already mapped); NULL in a dry run. Returns 0, or -1 with
   * err (the loop then stops with status error). */
  int (*execute)(void *ctx, const tars_action *a, char *err, int errlen);
  /* Whether execute can perform an action (0) or not (-1 with err); may be NULL. Every action of a reply is
   * checked before the first one is performed, so a reply with an impossible action performs nothing. */
  int (*can_execute)(void *ctx, const tars_action *a, char *err, int errlen);
  void *ctx;
} tars_env;

typedef struct {
  const char *task;             /* the user's instruction */
  tars_mode mode;               /* computer use, or grounding (one step: the click is performed, status end) */
  int version;                  /* 10 or 15 */
  const char *language;         /* language of the Thought */
  const char *prompt_template;  /* --prompt-file contents, or NULL for the built-in prompt */
  int max_steps;                /* model calls before status max_loop (default 100) */
  int history;                  /* screenshots sent per request, the current one included (default 5) */
  long min_pixels, max_pixels;  /* 1.5: smart_resize bounds for the mapping; 1.0: linear_resize bounds of
                                   the sent image; 0 = defaults (78400; 12845056 for 1.5, 2116800 for 1.0) */
  long wait_ms;                 /* the wait() action's pause (default 5000) */
  long interval_ms;             /* pause after each step's actions (default 1000) */
  const char *save_dir;         /* when not NULL: step-NNN.png (the image sent), step-NNN.txt (the reply),
                                   step-NNN.json (the parsed actions) are written there */
  long capture_retry_ms;        /* pause before capturing again after a failure (default 1000) */
  tars_client_cfg client;
  /* The model call; NULL = tars_chat over HTTP. Same contract as tars_chat (reply malloc'ed, -1 with err);
   * tests plug in scripted replies here. */
  int (*chat)(void *chat_ctx, const tars_client_cfg *c, const char *messages_json, char **reply, char *err,
              int errlen);
  void *chat_ctx;
  FILE *out;                    /* step log (thought, action, coordinates, status); NULL = stdout */
} tars_agent_cfg;

/* Fills the defaults listed above (client: tars_client_defaults). */
void tars_agent_defaults(tars_agent_cfg *c);

/* Builds the chat "messages" JSON array: a system line, the first user turn (text), then for each past step
 * i < nsteps an optional user image turn and the assistant reply replies[i], ending with the user image of
 * the current screenshot images[nsteps]. Only the last `history` images (the current one included) are sent;
 * older steps keep their assistant text only. images[i] are data URLs. Returns a malloc'ed string or NULL. */
char *tars_build_messages(const char *first_user_text, const char *const *replies, const char *const *images,
                          int nsteps, int history);

/* Runs the loop. *stop (may be NULL) is polled between and during steps (set it from a SIGINT handler).
 * *answer gets finished()'s content (malloc'ed) or NULL. err gets one line for status error.
 * Returns the final status. */
tars_status tars_agent_run(const tars_agent_cfg *cfg, const tars_env *env, volatile int *stop, char **answer,
                           char *err, int errlen);

/* Writes a one-line human description of a mapped action ("click (99, 198)", "type \"hi\" + Enter", ...). */
void tars_describe_action(const tars_action *a, FILE *f);

#endif
