/* Request layout, reply extraction, prompts, images (PNG round trip, area resampling, base64). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "client.h"
#include "image.h"
#include "prompt.h"

/* roles of a messages array as "s,u,i,a,..." (i = a user image turn) */
static void roles(const char *json, char *out) {
  cJSON *a = cJSON_Parse(json);
  assert_non_null(a);
  out[0] = 0;
  cJSON *m;
  cJSON_ArrayForEach(m, a) {
    const char *r = cJSON_GetObjectItem(m, "role")->valuestring;
    cJSON *c = cJSON_GetObjectItem(m, "content");
    char k = r[0] == 's' ? 's' : r[0] == 'a' ? 'a' : 'u';
    if (k == 'u' && cJSON_IsArray(c) && !strcmp(cJSON_GetObjectItem(cJSON_GetArrayItem(c, 0), "type")->valuestring, "image_url"))
      k = 'i';
    size_t n = strlen(out);
    if (n) out[n++] = ',';
    out[n++] = k;
    out[n] = 0;
  }
  cJSON_Delete(a);
}

static void test_messages_window(void **state) {
  (void)state;
  const char *replies[] = {"r0", "r1", "r2", "r3", "r4", "r5"};
  const char *images[] = {"data:0", "data:1", "data:2", "data:3", "data:4", "data:5", "data:6"};
  char r[200];
  char *j = tars_build_messages("prompt+task", replies, images, 0, 5);
  roles(j, r);
  assert_string_equal(r, "s,u,i");
  assert_non_null(strstr(j, "\"url\":\"data:0\""));
  free(j);
  /* 4 past steps + current = 5 images: all kept (SDK: 1, 2 or 5 images leave the conversation unchanged) */
  j = tars_build_messages("p", replies, images, 4, 5);
  roles(j, r);
  assert_string_equal(r, "s,u,i,a,i,a,i,a,i,a,i");
  free(j);
  /* 5 past steps: 6 images, the oldest is dropped and its text kept */
  j = tars_build_messages("p", replies, images, 5, 5);
  roles(j, r);
  assert_string_equal(r, "s,u,a,i,a,i,a,i,a,i,a,i");
  assert_null(strstr(j, "data:0"));
  assert_non_null(strstr(j, "data:1"));
  assert_non_null(strstr(j, "\"content\":\"r0\""));
  free(j);
  /* history 1: only the current screenshot */
  j = tars_build_messages("p", replies, images, 3, 1);
  roles(j, r);
  assert_string_equal(r, "s,u,a,a,a,i");
  assert_non_null(strstr(j, "data:3"));
  assert_null(strstr(j, "data:2"));
  free(j);
  /* exact layout of a one-step history */
  j = tars_build_messages("P", replies, images, 1, 5);
  assert_string_equal(j,
                      "[{\"role\":\"system\",\"content\":\"You are a helpful assistant.\"},"
                      "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"P\"}]},"
                      "{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:0\"}}]},"
                      "{\"role\":\"assistant\",\"content\":\"r0\"},"
                      "{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:1\"}}]}]");
  free(j);
}

static void test_reply_text(void **state) {
  (void)state;
  char err[300];
  char *t = tars_chat_reply_text("{\"choices\":[{\"message\":{\"role\":\"assistant\",\"content\":\"Action: wait()\"}}]}", err,
                                 sizeof err);
  assert_string_equal(t, "Action: wait()");
  free(t);
  t = tars_chat_reply_text("{\"choices\":[{\"message\":{\"content\":[{\"type\":\"text\",\"text\":\"a\"},{\"type\":\"text\",\"text\":\"b\"}]}}]}",
                           err, sizeof err);
  assert_string_equal(t, "ab");
  free(t);
  assert_null(tars_chat_reply_text("{\"error\":{\"message\":\"model not found\"}}", err, sizeof err));
  assert_string_equal(err, "the server returned an error: model not found");
  assert_null(tars_chat_reply_text("{\"choices\":[]}", err, sizeof err));
  assert_string_equal(err, "the server's response has no choices: \"{\"choices\":[]}\"");
  assert_null(tars_chat_reply_text("{\"choices\":[{\"message\":{\"content\":\"\"}}]}", err, sizeof err));
  assert_string_equal(err, "the server returned an empty reply");
  assert_null(tars_chat_reply_text("{\"choices\":[{\"message\":{\"content\":null}}]}", err, sizeof err));
  assert_null(tars_chat_reply_text("Bad Gateway", err, sizeof err));
  assert_string_equal(err, "the server's response is not JSON: \"Bad Gateway\"");
}

static void test_prompts(void **state) {
  (void)state;
  char *p = tars_prompt_build(TARS_MODE_COMPUTER, "Deutsch", "list the files", NULL);
  const char *must[] = {"## Output Format", "Thought: ...", "## Action Space", "click(start_box='<|box_start|>(x1,y1)<|box_end|>')",
                        "left_double(", "right_single(", "drag(", "hotkey(", "type(content=", "scroll(", "wait()",
                        "finished(content=", "call_user()", "Write the Thought in Deutsch.", "## User Instruction\nlist the files"};
  for (size_t i = 0; i < sizeof must / sizeof must[0]; i++)
    if (!strstr(p, must[i])) fail_msg("computer prompt lacks %s", must[i]);
  assert_int_equal(strcmp(p + strlen(p) - 14, "list the files"), 0);
  free(p);
  p = tars_prompt_build(TARS_MODE_GROUNDING, NULL, "the OK button", NULL);
  assert_non_null(strstr(p, "click(start_box="));
  assert_null(strstr(p, "Thought"));
  assert_null(strstr(p, "drag("));
  free(p);
  p = tars_prompt_build(TARS_MODE_COMPUTER, "English", "T", "Lang {language}; do: {instruction}.");
  assert_string_equal(p, "Lang English; do: T.");
  free(p);
  p = tars_prompt_build(TARS_MODE_COMPUTER, "English", "T", "Just act.");
  assert_string_equal(p, "Just act.\n\n## User Instruction\nT");
  free(p);
}

static void test_base64(void **state) {
  (void)state;
  /* RFC 4648 section 10 */
  const char *in[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
  const char *out[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
  for (int i = 0; i < 7; i++) {
    char *b = tars_base64((const unsigned char *)in[i], strlen(in[i]));
    assert_string_equal(b, out[i]);
    free(b);
  }
}

static void test_png_roundtrip_and_resize(void **state) {
  (void)state;
  tars_image im, back, small;
  assert_int_equal(tars_image_alloc(&im, 4, 2), 0);
  for (int i = 0; i < 4 * 2 * 3; i++) im.rgb[i] = (unsigned char)(i * 10);
  unsigned char *png;
  size_t len;
  char err[100];
  assert_int_equal(tars_png_encode(&im, &png, &len), 0);
  assert_memory_equal(png, "\x89PNG\r\n\x1a\n", 8);
  assert_int_equal(tars_png_decode(png, len, &back, err, sizeof err), 0);
  assert_int_equal(back.w, 4);
  assert_int_equal(back.h, 2);
  assert_memory_equal(back.rgb, im.rgb, 24);
  assert_int_equal(tars_png_decode(png, len - 20, &small, err, sizeof err), -1);
  free(png);
  /* 2x downscale: each output pixel is the mean of a 2x2 block (rounded) */
  assert_int_equal(tars_image_resize(&im, 2, 1, &small), 0);
  for (int c = 0; c < 3; c++) {
    int a = (im.rgb[c] + im.rgb[3 + c] + im.rgb[12 + c] + im.rgb[15 + c] + 2) / 4;
    int b = (im.rgb[6 + c] + im.rgb[9 + c] + im.rgb[18 + c] + im.rgb[21 + c] + 2) / 4;
    assert_int_equal(small.rgb[c], a);
    assert_int_equal(small.rgb[3 + c], b);
  }
  tars_image_free(&small);
  /* a constant image stays constant at a non-integer ratio */
  tars_image flat;
  assert_int_equal(tars_image_alloc(&flat, 7, 5), 0);
  memset(flat.rgb, 77, 7 * 5 * 3);
  assert_int_equal(tars_image_resize(&flat, 3, 2, &small), 0);
  for (int i = 0; i < 3 * 2 * 3; i++) assert_int_equal(small.rgb[i], 77);
  tars_image_free(&small);
  char *url = tars_image_data_url(&flat);
  assert_int_equal(strncmp(url, "data:image/png;base64,iVBORw0KGgo", 33), 0);
  free(url);
  tars_image_free(&flat);
  tars_image_free(&im);
  tars_image_free(&back);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_messages_window), cmocka_unit_test(test_reply_text), cmocka_unit_test(test_prompts),
      cmocka_unit_test(test_base64),          cmocka_unit_test(test_png_roundtrip_and_resize),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
