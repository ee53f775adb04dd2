/* The agent loop in process, with scripted model replies, a fake screen and a recording executor:
 * statuses, what is performed (nothing on garbage), screenshot retries, stop requests, the step log. */
#define _DEFAULT_SOURCE /* open_memstream */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"

typedef struct {
  double temps[8];            /* the temperature of each call */
  const char *const *replies; /* the model's replies in order; NULL entry = HTTP failure */
  int n, calls;
  char *last_messages;
  int capture_fail;           /* fail this many captures first */
  int captures;
  char performed[2048];       /* one line per executed action */
  int stop_after_exec;        /* set *stop after this many executions (0 = never) */
  int execs;
  volatile int *stop;
} fake;

static int fake_chat(void *ctx, const tars_client_cfg *c, const char *msgs, char **reply, char *err, int errlen) {
  fake *f = ctx;
  if (f->calls < 8) f->temps[f->calls] = c->temperature;
  free(f->last_messages);
  f->last_messages = strdup(msgs);
  const char *r = f->replies[f->calls < f->n ? f->calls : f->n - 1];
  f->calls++;
  if (!r) {
    snprintf(err, errlen, "HTTP 500");
    return -1;
  }
  *reply = strdup(r);
  return 0;
}

static int fake_capture(void *ctx, tars_image *out, char *err, int errlen) {
  fake *f = ctx;
  f->captures++;
  if (f->capture_fail > 0) {
    f->capture_fail--;
    snprintf(err, errlen, "no screen");
    return -1;
  }
  if (tars_image_alloc(out, 1000, 500)) return -1;
  return 0;
}

static int fake_execute(void *ctx, const tars_action *a, char *err, int errlen) {
  (void)err, (void)errlen;
  fake *f = ctx;
  size_t n = strlen(f->performed);
  FILE *m = fmemopen(f->performed + n, sizeof f->performed - n, "w");
  tars_describe_action(a, m);
  fclose(m);
  if (f->stop_after_exec && ++f->execs >= f->stop_after_exec) *f->stop = 1;
  return 0;
}

static int fake_can(void *ctx, const tars_action *a, char *err, int errlen) {
  (void)ctx;
  if (a->type == TARS_OPEN_APP) {
    snprintf(err, errlen, "open_app has no X11 counterpart");
    return -1;
  }
  return 0;
}

static volatile int g_stop;

static double g_temperature = 0;
static int g_retries = 1;

/* Runs the loop on f with 1.0 coordinates (x/1000 * 1000, y/1000 * 500). */
static tars_status run(fake *f, int max_steps, int dry, char **answer, char *err, char **log) {
  tars_agent_cfg cfg;
  tars_agent_defaults(&cfg);
  cfg.task = "the task";
  cfg.version = 10;
  cfg.max_steps = max_steps;
  cfg.interval_ms = 0;
  cfg.wait_ms = 0;
  cfg.capture_retry_ms = 0;
  cfg.client.retries = g_retries;
  cfg.client.temperature = g_temperature;
  cfg.chat = fake_chat;
  cfg.chat_ctx = f;
  size_t len;
  FILE *out = open_memstream(log, &len);
  cfg.out = out;
  tars_env env = {fake_capture, dry ? NULL : fake_execute, fake_can, f};
  g_stop = 0;
  f->stop = &g_stop;
  tars_status st = tars_agent_run(&cfg, &env, &g_stop, answer, err, 300);
  fclose(out);
  return st;
}

static void test_finished(void **state) {
  (void)state;
  const char *replies[] = {"Thought: go\nAction: click(start_box='(100,200)')\n\ntype(content='hi\\n')",
                           "Thought: done\nAction: finished(content='the answer')"};
  fake f = {.replies = replies, .n = 2};
  char *answer, err[300], *log;
  assert_int_equal(run(&f, 10, 0, &answer, err, &log), TARS_ST_END);
  assert_string_equal(answer, "the answer");
  assert_string_equal(f.performed, "click (100, 100)\ntype \"hi\" + Enter\n");
  assert_string_equal(log,
                      "step 1\nthought: go\naction: click(start_box='(100,200)') type(content='hi\\n')\n"
                      "  click (100, 100)\n  type \"hi\" + Enter\n"
                      "step 2\nthought: done\naction: finished(content='the answer')\n  finished \"the answer\"\n");
  /* the second request carries the first reply with box tokens */
  assert_non_null(strstr(f.last_messages, "click(start_box='<|box_start|>(100,200)<|box_end|>')"));
  assert_int_equal(f.calls, 2);
  free(answer);
  free(log);
  free(f.last_messages);
}

static void test_dry_run_performs_nothing(void **state) {
  (void)state;
  const char *replies[] = {"Action: click(start_box='(1,2)')", "Action: call_user()"};
  fake f = {.replies = replies, .n = 2};
  char *answer, err[300], *log;
  assert_int_equal(run(&f, 10, 1, &answer, err, &log), TARS_ST_CALL_USER);
  assert_string_equal(f.performed, "");
  assert_non_null(strstr(log, "  (dry run) click (1, 1)\n"));
  assert_null(answer);
  free(log);
  free(f.last_messages);
}

static void test_nothing_on_impossible_or_garbage(void **state) {
  (void)state;
  const char *replies[] = {"Action: click(start_box='(1,2)')\n\nopen_app(app_name='Maps')"};
  fake f = {.replies = replies, .n = 1};
  char *answer, err[300], *log;
  assert_int_equal(run(&f, 10, 0, &answer, err, &log), TARS_ST_ERROR);
  assert_string_equal(err, "nothing performed: open_app has no X11 counterpart");
  assert_string_equal(f.performed, "");
  free(log);
  free(f.last_messages);
  /* garbage twice (1 + 1 retry): error naming it, nothing performed */
  const char *bad[] = {"Action: click(start_box='(1,2)')\n\ndrag(start_box='(1,2)')"};
  fake g = {.replies = bad, .n = 1};
  assert_int_equal(run(&g, 10, 0, &answer, err, &log), TARS_ST_ERROR);
  assert_string_equal(err, "unusable reply: drag needs end_box in \"drag(start_box='(1,2)')\"");
  assert_int_equal(g.calls, 2);
  assert_string_equal(g.performed, "");
  free(log);
  free(g.last_messages);
}

static void test_limits_and_terminal_actions(void **state) {
  (void)state;
  char *answer, err[300], *log;
  const char *waits[] = {"Action: wait()"};
  fake f = {.replies = waits, .n = 1};
  assert_int_equal(run(&f, 4, 0, &answer, err, &log), TARS_ST_MAX_LOOP);
  assert_int_equal(f.calls, 4);
  assert_string_equal(err, "reached the step limit (4)");
  assert_string_equal(f.performed, ""); /* wait is the loop's, not the executor's */
  free(log);
  free(f.last_messages);
  const char *env_err[] = {"Action: error_env()"};
  fake g = {.replies = env_err, .n = 1};
  assert_int_equal(run(&g, 4, 0, &answer, err, &log), TARS_ST_ERROR);
  assert_string_equal(err, "the model reported an environment error");
  free(log);
  free(g.last_messages);
  const char *http[] = {NULL};
  fake h = {.replies = http, .n = 1};
  assert_int_equal(run(&h, 4, 0, &answer, err, &log), TARS_ST_ERROR);
  assert_string_equal(err, "model call failed: HTTP 500");
  assert_int_equal(h.calls, 1);
  free(log);
  free(h.last_messages);
}

static void test_screenshot_retries(void **state) {
  (void)state;
  char *answer, err[300], *log;
  const char *fin[] = {"Action: finished()"};
  fake f = {.replies = fin, .n = 1};
  f.capture_fail = TARS_CAPTURE_TRIES - 1;
  assert_int_equal(run(&f, 4, 0, &answer, err, &log), TARS_ST_END);
  assert_int_equal(f.captures, TARS_CAPTURE_TRIES);
  free(log);
  free(f.last_messages);
  fake g = {.replies = fin, .n = 1};
  g.capture_fail = TARS_CAPTURE_TRIES;
  assert_int_equal(run(&g, 4, 0, &answer, err, &log), TARS_ST_ERROR);
  assert_string_equal(err, "screenshot failed 3 times: no screen");
  assert_int_equal(g.calls, 0);
  free(log);
}

static void test_stop_request(void **state) {
  (void)state;
  char *answer, err[300], *log;
  const char *clicks[] = {"Action: click(start_box='(1,2)')\n\nclick(start_box='(3,4)')"};
  fake f = {.replies = clicks, .n = 1};
  f.stop_after_exec = 1; /* "Ctrl-C" while the first action runs: the second is not performed */
  assert_int_equal(run(&f, 10, 0, &answer, err, &log), TARS_ST_USER_STOPPED);
  assert_string_equal(f.performed, "click (1, 1)\n");
  assert_string_equal(err, "stopped by the user");
  assert_int_equal(f.calls, 1);
  free(log);
  free(f.last_messages);
}

/* unusable replies are asked again a little warmer, up to 1.0; a user temperature above 1 is kept */
static void test_retry_temperature(void **state) {
  (void)state;
  char *answer, err[300], *log;
  const char *bad[] = {"Thought: hmm"};
  g_retries = 4;
  g_temperature = 0.75;
  fake f = {.replies = bad, .n = 1};
  assert_int_equal(run(&f, 3, 0, &answer, err, &log), TARS_ST_ERROR);
  assert_int_equal(f.calls, 5);
  const double want[] = {0.75, 0.85, 0.95, 1.0, 1.0};
  for (int i = 0; i < 5; i++) assert_float_equal(f.temps[i], want[i], 1e-12);
  free(log);
  free(f.last_messages);
  g_temperature = 1.5;
  fake g = {.replies = bad, .n = 1};
  assert_int_equal(run(&g, 3, 0, &answer, err, &log), TARS_ST_ERROR);
  for (int i = 0; i < 5; i++) assert_float_equal(g.temps[i], 1.5, 0);
  free(log);
  free(g.last_messages);
  g_retries = 1;
  g_temperature = 0;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_finished),           cmocka_unit_test(test_dry_run_performs_nothing),
      cmocka_unit_test(test_nothing_on_impossible_or_garbage), cmocka_unit_test(test_limits_and_terminal_actions),
      cmocka_unit_test(test_screenshot_retries), cmocka_unit_test(test_stop_request),
      cmocka_unit_test(test_retry_temperature),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
