#include "agent.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "resize.h"
#include "util.h"

const char *tars_status_name(tars_status s) {
  static const char *const n[] = {"running", "end", "call_user", "max_loop", "user_stopped", "error"};
  return (s >= TARS_ST_RUNNING && s <= TARS_ST_ERROR) ? n[s] : "?";
}

void tars_agent_defaults(tars_agent_cfg *c) {
  memset(c, 0, sizeof *c);
  c->mode = TARS_MODE_COMPUTER;
  c->version = 15;
  c->language = "English";
  c->max_steps = 100;
  c->history = 5;
  c->wait_ms = 5000;
  c->interval_ms = 1000;
  c->capture_retry_ms = 1000;
  tars_client_defaults(&c->client);
}

static cJSON *image_turn(const char *url) {
  cJSON *m = cJSON_CreateObject();
  cJSON_AddStringToObject(m, "role", "user");
  cJSON *content = cJSON_AddArrayToObject(m, "content");
  cJSON *part = cJSON_CreateObject();
  cJSON_AddStringToObject(part, "type", "image_url");
  cJSON *iu = cJSON_AddObjectToObject(part, "image_url");
  cJSON_AddStringToObject(iu, "url", url);
  cJSON_AddItemToArray(content, part);
  return m;
}

static cJSON *text_turn(const char *role, const char *text) {
  cJSON *m = cJSON_CreateObject();
  cJSON_AddStringToObject(m, "role", role);
  cJSON_AddStringToObject(m, "content", text);
  return m;
}

char *tars_build_messages(const char *first_user_text, const char *const *replies, const char *const *images,
                          int nsteps, int history) {
  cJSON *arr = cJSON_CreateArray();
  if (!arr) return NULL;
  cJSON_AddItemToArray(arr, text_turn("system", "You are a helpful assistant."));
  cJSON *u = cJSON_CreateObject();
  cJSON_AddStringToObject(u, "role", "user");
  cJSON *content = cJSON_AddArrayToObject(u, "content");
  cJSON *part = cJSON_CreateObject();
  cJSON_AddStringToObject(part, "type", "text");
  cJSON_AddStringToObject(part, "text", first_user_text);
  cJSON_AddItemToArray(content, part);
  cJSON_AddItemToArray(arr, u);
  int first_image = nsteps + 1 - history; /* steps >= this send their screenshot */
  for (int i = 0; i < nsteps; i++) {
    if (i >= first_image && images[i]) cJSON_AddItemToArray(arr, image_turn(images[i]));
    cJSON_AddItemToArray(arr, text_turn("assistant", replies[i]));
  }
  cJSON_AddItemToArray(arr, image_turn(images[nsteps]));
  char *s = cJSON_PrintUnformatted(arr);
  cJSON_Delete(arr);
  return s;
}

static void put_quoted(const char *s, FILE *f) {
  fputc('"', f);
  for (; *s; s++) {
    if (*s == '\n') fputs("\\n", f);
    else if (*s == '"' || *s == '\\') fprintf(f, "\\%c", *s);
    else fputc(*s, f);
  }
  fputc('"', f);
}

void tars_describe_action(const tars_action *a, FILE *f) {
  fputs(tars_action_name(a->type), f);
  if (a->start.has) fprintf(f, " (%d, %d)", a->start.x, a->start.y);
  if (a->end.has) fprintf(f, " -> (%d, %d)", a->end.x, a->end.y);
  switch (a->type) {
    case TARS_TYPE:
      fputc(' ', f);
      put_quoted(a->text ? a->text : "", f);
      if (a->enter) fputs(" + Enter", f);
      break;
    case TARS_HOTKEY: case TARS_KEY_DOWN: case TARS_KEY_UP:
      for (int i = 0; i < a->nkeys; i++) fprintf(f, "%c%s", i ? '+' : ' ', a->keys[i]);
      break;
    case TARS_SCROLL:
      if (a->direction) fprintf(f, " %s x%d", tars_direction_name(a->direction), TARS_SCROLL_CLICKS);
      break;
    case TARS_FINISHED: case TARS_NAVIGATE: case TARS_OPEN_APP:
      if (a->text) {
        fputc(' ', f);
        put_quoted(a->text, f);
      }
      break;
    default:
      break;
  }
  if (a->start.clamped || a->end.clamped) fputs(" (clamped to the screen)", f);
  fputc('\n', f);
}

/* Writes DIR/step-NNN.EXT. Returns 0, or -1 with err naming the file. */
static int save_file(const char *dir, int step, const char *ext, const char *data, size_t len, char *err,
                     int errlen) {
  char path[4096];
  snprintf(path, sizeof path, "%s/step-%03d.%s", dir, step, ext);
  FILE *f = fopen(path, "wb");
  int ok = f && fwrite(data, 1, len, f) == len;
  if (f && fclose(f)) ok = 0;
  if (!ok) snprintf(err, errlen, "cannot write %.400s", path);
  return ok ? 0 : -1;
}

/* Sleeps ms, waking early when *stop is set. */
static void nap(long ms, volatile int *stop) {
  for (long t = 0; t < ms && !(stop && *stop); t += 50) tars_sleep_ms(ms - t < 50 ? ms - t : 50);
}

typedef struct {
  char **replies, **images;
  int n, cap;
} history_t;

static void history_free(history_t *h) {
  for (int i = 0; i < h->n; i++) free(h->replies[i]);
  for (int i = 0; i <= h->n && h->images; i++) free(h->images[i]);
  free(h->replies);
  free(h->images);
}

tars_status tars_agent_run(const tars_agent_cfg *cfg, const tars_env *env, volatile int *stop, char **answer,
                           char *err, int errlen) {
  FILE *out = cfg->out ? cfg->out : stdout;
  *answer = NULL;
  err[0] = 0;
  long minp = cfg->min_pixels ? cfg->min_pixels : TARS_MIN_PIXELS;
  long maxp = cfg->max_pixels ? cfg->max_pixels : cfg->version == 10 ? TARS_MAX_PIXELS_V10 : TARS_MAX_PIXELS;
  char *first = tars_prompt_build(cfg->mode, cfg->language, cfg->task, cfg->prompt_template);
  history_t h = {0};
  tars_status st = TARS_ST_RUNNING;
  tars_client_cfg cc = cfg->client;
  cc.stop = stop;
  if (!first) {
    snprintf(err, errlen, "out of memory");
    return TARS_ST_ERROR;
  }
  for (int step = 0; st == TARS_ST_RUNNING; step++) {
    if (stop && *stop) {
      st = TARS_ST_USER_STOPPED;
      break;
    }
    if (step >= cfg->max_steps) {
      st = TARS_ST_MAX_LOOP;
      snprintf(err, errlen, "reached the step limit (%d)", cfg->max_steps);
      break;
    }
    if (h.n + 1 >= h.cap) {
      int cap = h.cap ? h.cap * 2 : 8;
      char **r = realloc(h.replies, sizeof *r * (size_t)cap), **im = r ? realloc(h.images, sizeof *im * (size_t)cap) : NULL;
      if (r) h.replies = r;
      if (!r || !im) {
        snprintf(err, errlen, "out of memory");
        st = TARS_ST_ERROR;
        break;
      }
      h.images = im;
      h.cap = cap;
    }
    h.images[h.n] = NULL;
    /* screenshot */
    tars_image shot = {0};
    char e[512];
    int tries = 0, captured = 0;
    while (!captured && tries < TARS_CAPTURE_TRIES && !(stop && *stop)) {
      if (env->capture(env->ctx, &shot, e, sizeof e) == 0) {
        captured = 1;
      } else if (++tries < TARS_CAPTURE_TRIES) {
        fprintf(stderr, "tars: screenshot failed: %s (trying again)\n", e);
        nap(cfg->capture_retry_ms, stop);
      }
    }
    if (!captured) {
      if (stop && *stop) {
        st = TARS_ST_USER_STOPPED;
      } else {
        snprintf(err, errlen, "screenshot failed %d times: %s", tries, e);
        st = TARS_ST_ERROR;
      }
      break;
    }
    tars_space sp;
    if (tars_space_init(&sp, cfg->version, shot.w, shot.h, minp, maxp, e, sizeof e)) {
      snprintf(err, errlen, "screen %dx%d: %s", shot.w, shot.h, e);
      tars_image_free(&shot);
      st = TARS_ST_ERROR;
      break;
    }
    if (cfg->version == 10) {
      /* 1.0 coordinates are relative, so a smaller image keeps the mapping (reference/uitars.md 2.2) */
      long rw, rh;
      tars_image small;
      if (!tars_linear_resize(shot.w, shot.h, minp, maxp, &rw, &rh) && (rw != shot.w || rh != shot.h) &&
          !tars_image_resize(&shot, (int)rw, (int)rh, &small)) {
        tars_image_free(&shot);
        shot = small;
      }
    }
    unsigned char *png = NULL;
    size_t png_len = 0;
    if (tars_png_encode(&shot, &png, &png_len) == 0) h.images[h.n] = tars_png_data_url(png, png_len);
    tars_image_free(&shot);
    if (cfg->save_dir && png && save_file(cfg->save_dir, step + 1, "png", (const char *)png, png_len, e, sizeof e)) {
      free(png);
      snprintf(err, errlen, "%s", e);
      st = TARS_ST_ERROR;
      break;
    }
    free(png);
    if (!h.images[h.n]) {
      snprintf(err, errlen, "PNG encoding of the screenshot failed");
      st = TARS_ST_ERROR;
      break;
    }
    char *msgs = tars_build_messages(first, (const char *const *)h.replies, (const char *const *)h.images, h.n,
                                     cfg->history);
    if (!msgs) {
      snprintf(err, errlen, "out of memory");
      st = TARS_ST_ERROR;
      break;
    }
    /* model call; a reply that does not parse is asked again (retries), a little warmer each time */
    char *reply = NULL;
    tars_reply r;
    int parsed = 0;
    for (int attempt = 0; attempt <= cfg->client.retries && !(stop && *stop); attempt++) {
      /* raised by 0.1 per retry up to 1.0; a higher user setting is left alone */
      double cap = cfg->client.temperature > 1.0 ? cfg->client.temperature : 1.0;
      cc.temperature = cfg->client.temperature + 0.1 * attempt;
      if (cc.temperature > cap) cc.temperature = cap;
      free(reply);
      reply = NULL;
      if ((cfg->chat ? cfg->chat(cfg->chat_ctx, &cc, msgs, &reply, e, sizeof e)
                     : tars_chat(&cc, msgs, &reply, NULL, e, sizeof e))) {
        snprintf(err, errlen, "model call failed: %s", e);
        break;
      }
      if (tars_parse_reply(reply, &sp, &r, e, sizeof e) == 0) {
        parsed = 1;
        break;
      }
      snprintf(err, errlen, "unusable reply: %s", e);
      /* the last attempt's error is the run's error, printed once by the caller */
      if (attempt < cfg->client.retries && !(stop && *stop)) fprintf(stderr, "tars: step %d: %s (asking again)\n", step + 1, err);
    }
    free(msgs);
    if (!parsed) {
      free(reply);
      st = (stop && *stop) ? TARS_ST_USER_STOPPED : TARS_ST_ERROR;
      break;
    }
    h.replies[h.n++] = reply;
    h.images[h.n] = NULL;
    fprintf(out, "step %d\n", step + 1);
    if (r.reflection) fprintf(out, "reflection: %s\n", r.reflection);
    fprintf(out, "thought: %s\n", r.thought ? r.thought : "");
    fputs("action: ", out);
    for (const char *p = r.action_text; *p;) { /* one line: a whitespace run with a line break -> one space */
      size_t run = strspn(p, " \t\r\n");
      if (run && memchr(p, '\n', run)) {
        fputc(' ', out);
        p += run;
      } else {
        fputc(*p++, out);
      }
    }
    fputc('\n', out);
    for (int i = 0; i < r.n; i++) {
      fputs(env->execute ? "  " : "  (dry run) ", out);
      tars_describe_action(&r.actions[i], out);
    }
    fflush(out);
    if (cfg->save_dir) {
      char *json = tars_reply_to_json(&r);
      int bad = !json || save_file(cfg->save_dir, step + 1, "json", json, strlen(json), e, sizeof e) ||
                save_file(cfg->save_dir, step + 1, "txt", reply, strlen(reply), e, sizeof e);
      int oom = !json;
      free(json);
      if (bad) {
        snprintf(err, errlen, "%s", oom ? "out of memory" : e);
        st = TARS_ST_ERROR;
      }
    }
    /* history keeps the reply in the box-token form (a failed rewrite keeps it verbatim) */
    char *tok = tars_add_box_tokens(reply);
    if (tok) {
      free(reply);
      h.replies[h.n - 1] = reply = tok;
    }
    for (int i = 0; i < r.n && env->execute && env->can_execute && st == TARS_ST_RUNNING; i++)
      if (env->can_execute(env->ctx, &r.actions[i], e, sizeof e)) {
        snprintf(err, errlen, "nothing performed: %s", e);
        st = TARS_ST_ERROR;
      }
    for (int i = 0; i < r.n && st == TARS_ST_RUNNING; i++) {
      const tars_action *a = &r.actions[i];
      if (stop && *stop) {
        st = TARS_ST_USER_STOPPED;
        break;
      }
      switch (a->type) {
        case TARS_FINISHED:
          st = TARS_ST_END;
          if (a->text) *answer = strdup(a->text);
          continue;
        case TARS_CALL_USER:
          st = TARS_ST_CALL_USER;
          continue;
        case TARS_ERROR_ENV:
          st = TARS_ST_ERROR;
          snprintf(err, errlen, "the model reported an environment error");
          continue;
        case TARS_MAX_LOOP:
          st = TARS_ST_MAX_LOOP;
          continue;
        case TARS_USER_STOP:
          st = TARS_ST_USER_STOPPED;
          continue;
        case TARS_WAIT:
          nap(cfg->wait_ms, stop);
          continue;
        default:
          break;
      }
      if (env->execute && env->execute(env->ctx, a, e, sizeof e)) {
        snprintf(err, errlen, "%s failed: %s", tars_action_name(a->type), e);
        st = TARS_ST_ERROR;
      }
    }
    tars_reply_free(&r);
    if (st == TARS_ST_RUNNING && cfg->mode == TARS_MODE_GROUNDING) st = TARS_ST_END;
    if (st == TARS_ST_RUNNING) nap(cfg->interval_ms, stop);
  }
  if (st == TARS_ST_RUNNING) st = TARS_ST_ERROR;
  if (st == TARS_ST_USER_STOPPED && !err[0]) snprintf(err, errlen, "stopped by the user");
  history_free(&h);
  free(first);
  return st;
}
