/* The reply parser: the vectors of reference/uitars.md 3.3 and the pitfalls of section 5 (each to the exact
 * JSON tars prints; the numbers were checked against the reference's values), error messages that name the
 * offending text, fractions for the JS peer's factors, escapes and key names. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keys.h"
#include "parse.h"

typedef struct {
  const char *name;
  int version;
  long width, height;
  const char *reply, *json;
} vec;

static const vec VECS[] = {
    {"P1", 10, 1920, 1080,
     "Thought: Click the button\nAction: click(start_box='(100,200)')",
     "{\"thought\":\"Click the button\",\"reflection\":null,\"actions\":[{\"type\":\"click\",\"x\":192,\"y\":216,\"screen\":[192,216],\"model\":[100,200]}]}"},
    {"P2", 15, 1920, 1080,
     "Thought: t\nAction: click(point='<point>200 300</point>')",
     "{\"thought\":\"t\",\"reflection\":null,\"actions\":[{\"type\":\"click\",\"x\":199,\"y\":297,\"screen\":[198.758,296.703],\"model\":[200,300]}]}"},
    {"P3", 10, 1920, 1080,
     "Thought: t\nAction: drag(start_point='<point>458 328</point>', end_point='<point>350 309</point>')",
     "{\"thought\":\"t\",\"reflection\":null,\"actions\":[{\"type\":\"drag\",\"x\":879,\"y\":354,\"screen\":[879.36,354.24],\"model\":[458,328],\"end_x\":672,\"end_y\":334,\"end_screen\":[672,333.72],\"end_model\":[350,309]}]}"},
    {"P4", 10, 1920, 1080,
     "Thought: t\nAction: click(start_box='(10,20,30,40)')",
     "{\"thought\":\"t\",\"reflection\":null,\"actions\":[{\"type\":\"click\",\"x\":38,\"y\":32,\"screen\":[38.4,32.4],\"model\":[10,20,30,40]}]}"},
    {"P5", 15, 1920, 1080,
     "Thought: t\nAction: type(content='It\\'s ok')",
     "{\"thought\":\"t\",\"reflection\":null,\"actions\":[{\"type\":\"type\",\"text\":\"It's ok\",\"enter\":false}]}"},
    {"P6", 15, 1920, 1080,
     "Thought: t\nAction: type(content='say \\\"hi\\\"')",
     "{\"thought\":\"t\",\"reflection\":null,\"actions\":[{\"type\":\"type\",\"text\":\"say \\\"hi\\\"\",\"enter\":false}]}"},
    {"P7", 15, 1920, 1080,
     "Thought: t\nAction: type(content='line1\nline2\n')",
     "{\"thought\":\"t\",\"reflection\":null,\"actions\":[{\"type\":\"type\",\"text\":\"line1\\nline2\",\"enter\":true}]}"},
    {"P8", 15, 1920, 1080,
     "Thought: t\nAction: type(content='abc'",
     "{\"thought\":\"t\",\"reflection\":null,\"actions\":[{\"type\":\"type\",\"text\":\"abc\",\"enter\":false}]}"},
    {"P9", 15, 1920, 1080,
     "Thought: t\nAction: hotkey(key='ctrl shift t')",
     "{\"thought\":\"t\",\"reflection\":null,\"actions\":[{\"type\":\"hotkey\",\"keys\":[\"Control_L\",\"Shift_L\",\"t\"]}]}"},
    {"P10", 15, 1920, 1080,
     "Thought: t\nAction: hotkey(key='ctrl space')",
     "{\"thought\":\"t\",\"reflection\":null,\"actions\":[{\"type\":\"hotkey\",\"keys\":[\"Control_L\",\"space\"]}]}"},
    {"P11", 15, 1920, 1080,
     "Thought: t\nAction: scroll(direction='up')",
     "{\"thought\":\"t\",\"reflection\":null,\"actions\":[{\"type\":\"scroll\",\"direction\":\"up\",\"button\":4,\"clicks\":5}]}"},
    {"P12", 15, 1920, 1080,
     "Thought: t\nAction: left_double(start_box='(23,245)')",
     "{\"thought\":\"t\",\"reflection\":null,\"actions\":[{\"type\":\"left_double\",\"x\":23,\"y\":242,\"screen\":[22.857,242.308],\"model\":[23,245]}]}"},
    {"P13", 15, 1920, 1080,
     "Thought: t\nAction: wait()",
     "{\"thought\":\"t\",\"reflection\":null,\"actions\":[{\"type\":\"wait\"}]}"},
    {"P14", 15, 1920, 1080,
     "Thought: t\nAction: finished()",
     "{\"thought\":\"t\",\"reflection\":null,\"actions\":[{\"type\":\"finished\",\"content\":null}]}"},
    {"P15", 15, 1920, 1080,
     "Thought: t\nAction: click(start_box='(100,200)')\n\ntype(content='hello')",
     "{\"thought\":\"t\",\"reflection\":null,\"actions\":[{\"type\":\"click\",\"x\":99,\"y\":198,\"screen\":[99.379,197.802],\"model\":[100,200]},{\"type\":\"type\",\"text\":\"hello\",\"enter\":false}]}"},
    {"P16", 15, 1920, 1080,
     "Reflection: r\nAction_Summary: s\nAction: click(start_box='(100,200)')",
     "{\"thought\":\"s\",\"reflection\":\"r\",\"actions\":[{\"type\":\"click\",\"x\":99,\"y\":198,\"screen\":[99.379,197.802],\"model\":[100,200]}]}"},
    {"P17", 15, 1920, 1080,
     "Action: click(start_box='(100,200)')",
     "{\"thought\":null,\"reflection\":null,\"actions\":[{\"type\":\"click\",\"x\":99,\"y\":198,\"screen\":[99.379,197.802],\"model\":[100,200]}]}"},
    {"P18", 15, 1920, 1080,
     "Thought: t\nAction：click(start_box='(100,200)')",
     "{\"thought\":\"t\",\"reflection\":null,\"actions\":[{\"type\":\"click\",\"x\":99,\"y\":198,\"screen\":[99.379,197.802],\"model\":[100,200]}]}"},
    {"P19", 15, 1080, 2400,
     "Thought: t\nAction: long_press(start_box='(500,600)')",
     "{\"thought\":\"t\",\"reflection\":null,\"actions\":[{\"type\":\"long_press\",\"x\":495,\"y\":598,\"screen\":[494.505,598.007],\"model\":[500,600]}]}"},
    {"P20", 15, 1920, 1080,
     "Thought: t\nAction: press_home()",
     "{\"thought\":\"t\",\"reflection\":null,\"actions\":[{\"type\":\"press_home\"}]}"},
    {"P21", 15, 1920, 1080,
     "Thought: t\nAction:click(start_box='(1,2)')",
     "{\"thought\":\"t\",\"reflection\":null,\"actions\":[{\"type\":\"click\",\"x\":1,\"y\":2,\"screen\":[0.994,1.978],\"model\":[1,2]}]}"},
    {"P22", 15, 1920, 1080,
     "Thought: t\nAction: click(point='<point>200.5 300.5</point>')",
     "{\"thought\":\"t\",\"reflection\":null,\"actions\":[{\"type\":\"click\",\"x\":199,\"y\":297,\"screen\":[199.255,297.198],\"model\":[200.5,300.5]}]}"},
    {"P23", 15, 1920, 1080,
     "Thought: t\nAction: type(content='a)\n\nb')",
     "{\"thought\":\"t\",\"reflection\":null,\"actions\":[{\"type\":\"type\",\"text\":\"a)\\n\\nb\",\"enter\":false}]}"},
    {"P24", 15, 1920, 1080,
     "Thought: t\nAction: click(start_box='(100,200)')\n\nAction: type(content='doubao.com')",
     "{\"thought\":\"t\",\"reflection\":null,\"actions\":[{\"type\":\"type\",\"text\":\"doubao.com\",\"enter\":false}]}"},
    {"P25", 15, 1920, 1080,
     "Thought: t\nAction: finished(content='I\\'m done\\nbye')",
     "{\"thought\":\"t\",\"reflection\":null,\"actions\":[{\"type\":\"finished\",\"content\":\"I'm done\\nbye\"}]}"},
    {"P26", 15, 224, 224,
     "Thought: test\nAction: click(point='<point>200 300</point>')",
     "{\"thought\":\"test\",\"reflection\":null,\"actions\":[{\"type\":\"click\",\"x\":160,\"y\":223,\"screen\":[160,240],\"model\":[200,300],\"clamped\":true}]}"},
    {"P28", 10, 1000, 1000,
     "Thought: Perform multiple actions\nAction: click(start_box='(100,200)')\n\ntype(text='Hello', start_box='(300,400)')",
     "{\"thought\":\"Perform multiple actions\",\"reflection\":null,\"actions\":[{\"type\":\"click\",\"x\":100,\"y\":200,\"screen\":[100,200],\"model\":[100,200]},{\"type\":\"type\",\"x\":300,\"y\":400,\"screen\":[300,400],\"model\":[300,400],\"text\":\"Hello\",\"enter\":false}]}"},
    {"P29", 10, 1000, 1000,
     "Thought: x\nAction: click(start_box='<bbox>637 964 637 964</bbox>')",
     "{\"thought\":\"x\",\"reflection\":null,\"actions\":[{\"type\":\"click\",\"x\":637,\"y\":964,\"screen\":[637,964],\"model\":[637,964,637,964]}]}"},
    {"P30", 10, 2560, 1440,
     "<think>hmm</think>\nThought: To search for news, click the box\nAction: click(point='<point>510 150</point>')",
     "{\"thought\":\"To search for news, click the box\",\"reflection\":null,\"actions\":[{\"type\":\"click\",\"x\":1306,\"y\":216,\"screen\":[1305.6,216],\"model\":[510,150]}]}"},
    {"P31", 10, 1000, 1000,
     "Thought: Perform multiple actions\nAction: click(start_box='<bbox>100 200</bbox>')\n\ntype(text='Hello', start_box='<bbox>300 400</bbox>')",
     "{\"thought\":\"Perform multiple actions\",\"reflection\":null,\"actions\":[{\"type\":\"click\",\"x\":100,\"y\":200,\"screen\":[100,200],\"model\":[100,200]},{\"type\":\"type\",\"x\":300,\"y\":400,\"screen\":[300,400],\"model\":[300,400],\"text\":\"Hello\",\"enter\":false}]}"},
    {"P32", 10, 2560, 1440,
     "Action: click(start_box='[130,226]')",
     "{\"thought\":null,\"reflection\":null,\"actions\":[{\"type\":\"click\",\"x\":333,\"y\":325,\"screen\":[332.8,325.44],\"model\":[130,226]}]}"},
    {"P33", 10, 2560, 1440,
     "Action: drag(start_box='[130,226]', end_box='[200,226]')",
     "{\"thought\":null,\"reflection\":null,\"actions\":[{\"type\":\"drag\",\"x\":333,\"y\":325,\"screen\":[332.8,325.44],\"model\":[130,226],\"end_x\":512,\"end_y\":325,\"end_screen\":[512,325.44],\"end_model\":[200,226]}]}"},
    {"P35", 10, 1000, 1000,
     "click(start_box=\"(100,200)\")",
     "{\"thought\":null,\"reflection\":null,\"actions\":[{\"type\":\"click\",\"x\":100,\"y\":200,\"screen\":[100,200],\"model\":[100,200]}]}"},
    {"P36", 10, 1366, 768,
     "\n\nAction：click(start_box='<bbox>191 21 191 21</bbox>')",
     "{\"thought\":null,\"reflection\":null,\"actions\":[{\"type\":\"click\",\"x\":261,\"y\":16,\"screen\":[260.906,16.128],\"model\":[191,21,191,21]}]}"},
    {"P38", 10, 2560, 1440,
     "Action: click(start_box='[0, 964, 10, 984]')",
     "{\"thought\":null,\"reflection\":null,\"actions\":[{\"type\":\"click\",\"x\":13,\"y\":1403,\"screen\":[12.8,1402.56],\"model\":[0,964,10,984]}]}"},
    {"P39", 10, 1000, 1000,
     "Thought: The task is to open Chrome, then close it. Action: click(start_box='(962,108)')",
     "{\"thought\":\"The task is to open Chrome, then close it.\",\"reflection\":null,\"actions\":[{\"type\":\"click\",\"x\":962,\"y\":108,\"screen\":[962,108],\"model\":[962,108]}]}"},
    /* P40, P42: factor 1000 -> fractions (0.948, 0.057) and (0.395, 0.074), here times 1920 x 1080 */
    {"P40", 10, 1920, 1080,
     "Thought: Find the close button\nAction: click(start_box='[948,57]')",
     "{\"thought\":\"Find the close button\",\"reflection\":null,\"actions\":[{\"type\":\"click\",\"x\":1820,\"y\":62,\"screen\":[1820.16,61.56],\"model\":[948,57]}]}"},
    {"P42", 10, 1920, 1080,
     "Thought: Click on the search bar at the top of the screen\nAction: click(start_box='(395,74)')",
     "{\"thought\":\"Click on the search bar at the top of the screen\",\"reflection\":null,\"actions\":[{\"type\":\"click\",\"x\":758,\"y\":80,\"screen\":[758.4,79.92],\"model\":[395,74]}]}"},
    /* text before Action: without a label is no thought (the reference parser searches "Thought: " only);
     * a label after some preamble is found */
    {"T-unlabeled", 10, 1000, 1000,
     "I will click the button.\nAction: click(start_box='(100,200)')",
     "{\"thought\":null,\"reflection\":null,\"actions\":[{\"type\":\"click\",\"x\":100,\"y\":200,\"screen\":[100,200],\"model\":[100,200]}]}"},
    {"T-preamble", 10, 1000, 1000,
     "Sure. Thought: x\nAction: click(start_box='(100,200)')",
     "{\"thought\":\"x\",\"reflection\":null,\"actions\":[{\"type\":\"click\",\"x\":100,\"y\":200,\"screen\":[100,200],\"model\":[100,200]}]}"},
    {"P41", 10, 1000, 1000,
     "Reflection: it opened\nAction_Summary: double click the icon\nAction: left_double(start_box='21, 246, 21, 246')",
     "{\"thought\":\"double click the icon\",\"reflection\":\"it opened\",\"actions\":[{\"type\":\"left_double\",\"x\":21,\"y\":246,\"screen\":[21,246],\"model\":[21,246,21,246]}]}"},
    {"P44", 15, 1920, 1080,
     "Action_Summary: paste it\nAction: hotkey(key='ctrl v')",
     "{\"thought\":\"paste it\",\"reflection\":null,\"actions\":[{\"type\":\"hotkey\",\"keys\":[\"Control_L\",\"v\"]}]}"},
    {"P45", 10, 1000, 1000,
     "Action: click(start_box='1 2 3 4')",
     "{\"thought\":null,\"reflection\":null,\"actions\":[{\"type\":\"click\",\"x\":2,\"y\":3,\"screen\":[2,3],\"model\":[1,2,3,4]}]}"},
    {"PIT1", 15, 1920, 1080,
     "Action: click(start_box='(1000,500)')",
     "{\"thought\":null,\"reflection\":null,\"actions\":[{\"type\":\"click\",\"x\":994,\"y\":495,\"screen\":[993.789,494.505],\"model\":[1000,500]}]}"},
    {"PIT3", 10, 1000, 1000,
     "Action: click(start_box='[10, 850, 50, 890]')",
     "{\"thought\":null,\"reflection\":null,\"actions\":[{\"type\":\"click\",\"x\":30,\"y\":870,\"screen\":[30,870],\"model\":[10,850,50,890]}]}"},
    {"PIT5a", 10, 1000, 1000,
     "Action: click(point='<point>450 565</point>",
     "{\"thought\":null,\"reflection\":null,\"actions\":[{\"type\":\"click\",\"x\":450,\"y\":565,\"screen\":[450,565],\"model\":[450,565]}]}"},
    {"PIT5b", 10, 1000, 1000,
     "Action: click(point='<point>450 565</point>)",
     "{\"thought\":null,\"reflection\":null,\"actions\":[{\"type\":\"click\",\"x\":450,\"y\":565,\"screen\":[450,565],\"model\":[450,565]}]}"},
    {"PIT7", 15, 1920, 1080,
     "Action: hotkey(key='ctrl arrowleft')",
     "{\"thought\":null,\"reflection\":null,\"actions\":[{\"type\":\"hotkey\",\"keys\":[\"Control_L\",\"Left\"]}]}"},
    {"PIT8", 15, 1920, 1080,
     "Action: type(content='北京天气')",
     "{\"thought\":null,\"reflection\":null,\"actions\":[{\"type\":\"type\",\"text\":\"北京天气\",\"enter\":false}]}"},
    {"PIT9", 15, 1920, 1080,
     "Action: type(content='Hello World\\nUI-TARS\\n')",
     "{\"thought\":null,\"reflection\":null,\"actions\":[{\"type\":\"type\",\"text\":\"Hello World\\nUI-TARS\",\"enter\":true}]}"},
    {"PIT10", 15, 1920, 1080,
     "Action: scroll(start_box='(100,200)', direction='LEFT')",
     "{\"thought\":null,\"reflection\":null,\"actions\":[{\"type\":\"scroll\",\"x\":99,\"y\":198,\"screen\":[99.379,197.802],\"model\":[100,200],\"direction\":\"left\",\"button\":6,\"clicks\":5}]}"},
    {"PIT12", 15, 1920, 1080,
     "Action: click(start_box='<|box_start|>(691,85)<|box_end|>')",
     "{\"thought\":null,\"reflection\":null,\"actions\":[{\"type\":\"click\",\"x\":687,\"y\":84,\"screen\":[686.708,84.066],\"model\":[691,85]}]}"},
    {"PIT13", 15, 1920, 1080,
     "Action: click(start_box='(500,1000)')",
     "{\"thought\":null,\"reflection\":null,\"actions\":[{\"type\":\"click\",\"x\":497,\"y\":989,\"screen\":[496.894,989.011],\"model\":[500,1000]}]}"},
};

typedef struct {
  const char *name, *reply, *error;
} evec;

/* every malformed reply is rejected with a message naming its text (1.5, 1920x1080) */
static const evec ERRS[] = {
    {"P34", "Action: click(start_box='')",
     "click's start_box is empty in \"click(start_box='')\""},
    {"P43", "Thought: I will think about it",
     "no action in the reply \"Thought: I will think about it\""},
    {"P46", "Action: click(start_box='a, b')",
     "invalid coordinate number \"a\" at position 0 of \"a, b\" in \"click(start_box='a, b')\""},
    {"E1", "Action: click(start_box='=')",
     "invalid coordinate number \"=\" at position 0 of \"=\" in \"click(start_box='=')\""},
    {"E2", "Action: click(start_box='(100)')",
     "coordinate \"(100)\" has 1 number (need 2 or 4) in \"click(start_box='(100)')\""},
    {"E3", "Action: frobnicate(x='1')",
     "unknown action \"frobnicate\" in \"frobnicate(x='1')\""},
    {"E4", "Action: hotkey(key='ctrl flurb')",
     "unknown key name \"flurb\" in \"hotkey(key='ctrl flurb')\""},
    {"E5", "Action: scroll(direction='sideways')",
     "scroll direction \"sideways\" is not up, down, left or right in \"scroll(direction='sideways')\""},
    {"E6", "Action: click(start_box='(1,2,3)')",
     "coordinate \"(1,2,3)\" has 3 numbers (need 2 or 4) in \"click(start_box='(1,2,3)')\""},
    {"E7", "Action: click(start_box='(-5,10)')",
     "invalid coordinate number \"-5\" at position 1 of \"(-5,10)\" in \"click(start_box='(-5,10)')\""},
    {"E8", "Action: click(start_box='(nan,10)')",
     "invalid coordinate number \"nan\" at position 1 of \"(nan,10)\" in \"click(start_box='(nan,10)')\""},
    {"E9", "Action: drag(start_box='(1,2)')",
     "drag needs end_box in \"drag(start_box='(1,2)')\""},
    {"E10", "Action: click(start_box='(3000,200)')",
     "coordinate 3000 lies outside the 1932x1092 image the model saw in \"click(start_box='(3000,200)')\""},
    {"E11", "Action: click('(1,2)')",
     "expected key='value' at \"'(1,2)')\""},
    {"E12", "Action: click(start_box='(1,2)') and then more",
     "expected '(' after the action name in \"and then more\""},
    {"E13", "Action: type(content='\\x4')",
     "bad escape in the string \"\\x4\""},
    {"E14", "Action: ",
     "no action after \"Action:\""},
};

static void test_vectors(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof VECS / sizeof VECS[0]; i++) {
    tars_space sp;
    char err[300] = "";
    assert_int_equal(tars_space_init(&sp, VECS[i].version, VECS[i].width, VECS[i].height, 78400, 12845056, err,
                                     sizeof err), 0);
    tars_reply r;
    if (tars_parse_reply(VECS[i].reply, &sp, &r, err, sizeof err)) fail_msg("%s: %s", VECS[i].name, err);
    char *j = tars_reply_to_json(&r);
    if (strcmp(j, VECS[i].json)) fail_msg("%s:\n got  %s\n want %s", VECS[i].name, j, VECS[i].json);
    free(j);
    tars_reply_free(&r);
  }
}

static void test_errors(void **state) {
  (void)state;
  tars_space sp;
  assert_int_equal(tars_space_init(&sp, 15, 1920, 1080, 78400, 12845056, NULL, 0), 0);
  for (size_t i = 0; i < sizeof ERRS / sizeof ERRS[0]; i++) {
    tars_reply r;
    char err[300] = "";
    if (tars_parse_reply(ERRS[i].reply, &sp, &r, err, sizeof err) == 0) fail_msg("%s parsed", ERRS[i].name);
    if (strcmp(err, ERRS[i].error)) fail_msg("%s:\n got  %s\n want %s", ERRS[i].name, err, ERRS[i].error);
    assert_int_equal(r.n, 0);
    assert_null(r.actions);
  }
}

/* A space with the JS peer's factors (screen = factors, so sx = model value). */
static tars_space factors(double wf, double hf) {
  tars_space sp = {10, (long)wf, (long)hf, wf, hf};
  return sp;
}

static const tars_point *first_point(const char *reply, tars_space *sp, tars_reply *r) {
  char err[300];
  if (tars_parse_reply(reply, sp, r, err, sizeof err)) fail_msg("%s", err);
  return &r->actions[0].start;
}

static void test_fractions(void **state) {
  (void)state;
  tars_reply r;
  /* P27: factors (1366, 768) */
  tars_space sp = factors(1366, 768);
  const tars_point *p = first_point("Thought: I need to click this button\nAction: click(start_box='(100,200)')", &sp, &r);
  assert_float_equal(p->fx, 0.07320644216691069, 1e-16);
  assert_float_equal(p->fy, 0.2604166666666667, 1e-16);
  tars_reply_free(&r);
  /* P37 */
  p = first_point("Action: click(start_box='[348, 333, 928, 365]')", &sp, &r);
  assert_int_equal(p->n, 4);
  assert_float_equal(p->box[0] / 1366, 0.2547584187408492, 1e-16);
  assert_float_equal(p->box[2] / 1366, 0.6793557833089312, 1e-16);
  assert_float_equal(p->box[1] / 768, 0.43359375, 0);
  assert_float_equal(p->box[3] / 768, 0.4752604166666667, 1e-16);
  assert_float_equal(p->fx, (0.2547584187408492 + 0.6793557833089312) / 2, 1e-15);
  tars_reply_free(&r);
  /* P36 */
  p = first_point("\n\nAction\xEF\xBC\x9A" "click(start_box='<bbox>191 21 191 21</bbox>')", &sp, &r);
  assert_null(r.thought);
  assert_float_equal(p->fx, 0.1398243045387994, 1e-16);
  assert_float_equal(p->fy, 0.02734375, 0);
  tars_reply_free(&r);
  /* P2 / section 3.2: 1.5 FHD (100, 200) -> fractions (0.0517598..., 0.1831501...) */
  tars_space s15;
  assert_int_equal(tars_space_init(&s15, 15, 1920, 1080, 78400, 12845056, NULL, 0), 0);
  assert_float_equal(s15.wfactor, 1932, 0);
  assert_float_equal(s15.hfactor, 1092, 0);
  p = first_point("Action: click(start_box='(100,200)')", &s15, &r);
  assert_float_equal(p->fx, 0.051759834368530024, 1e-17);
  assert_float_equal(p->fy, 0.18315018315018314, 1e-17);
  tars_reply_free(&r);
  /* 3.2: UT inference_test (197, 525) -> (195.776, 519.231), rounded (196, 519) */
  p = first_point("Action: click(start_box='(197,525)')", &s15, &r);
  assert_float_equal(p->sx, 195.776, 5e-4);
  assert_float_equal(p->sy, 519.231, 5e-4);
  assert_int_equal(p->x, 196);
  assert_int_equal(p->y, 519);
  tars_reply_free(&r);
  /* P19 phone 1080x2400 -> 1092x2408 */
  tars_space ph;
  assert_int_equal(tars_space_init(&ph, 15, 1080, 2400, 78400, 12845056, NULL, 0), 0);
  p = first_point("Thought: t\nAction: long_press(start_box='(500,600)')", &ph, &r);
  assert_float_equal(p->fx, 0.45787545787545786, 1e-17);
  assert_float_equal(p->fy, 0.24916943521594684, 1e-17);
  tars_reply_free(&r);
  /* without a space the coordinates stay in model units */
  char err[200];
  assert_int_equal(tars_parse_reply("Action: click(start_box='(7,9)')", NULL, &r, err, sizeof err), 0);
  assert_float_equal(r.actions[0].start.box[0], 7, 0);
  assert_int_equal(r.actions[0].start.x, 0);
  tars_reply_free(&r);
}

static void test_zero_is_a_coordinate(void **state) {
  (void)state;
  tars_reply r;
  tars_space sp;
  char err[200];
  assert_int_equal(tars_space_init(&sp, 10, 2560, 1440, 78400, 12845056, NULL, 0), 0);
  assert_int_equal(tars_parse_reply("Action: drag(start_box='(0,0)', end_box='(0,0)')", &sp, &r, err, sizeof err), 0);
  assert_int_equal(r.n, 1);
  assert_int_equal(r.actions[0].type, TARS_DRAG);
  assert_true(r.actions[0].start.has && r.actions[0].end.has);
  assert_int_equal(r.actions[0].end.x, 0);
  assert_int_equal(r.actions[0].end.y, 0);
  tars_reply_free(&r);
}

static void test_py_escapes(void **state) {
  (void)state;
  const char *in[] = {"a\\'b", "\\\"q\\\"", "x\\ny", "back\\\\slash", "\\t\\r", "\\x41\\u00e9\\U0001F600",
                      "\\101\\0", "keep\\d", "end\\"};
  const char *out[] = {"a'b", "\"q\"", "x\ny", "back\\slash", "\t\r", "A\xC3\xA9\xF0\x9F\x98\x80", "A", "keep\\d",
                       "end\\"};
  for (size_t i = 0; i < sizeof in / sizeof in[0]; i++) {
    char *d = tars_decode_py_string(in[i], strlen(in[i]));
    assert_non_null(d);
    if (i == 6) {
      assert_int_equal(d[0], 'A');
      assert_int_equal(d[1], 0);
    } else if (strcmp(d, out[i])) {
      fail_msg("%s -> %s", in[i], d);
    }
    free(d);
  }
  assert_null(tars_decode_py_string("\\xZZ", 4));
  assert_null(tars_decode_py_string("\\u12", 4));
}

static void test_type_content(void **state) {
  (void)state;
  tars_reply r;
  char err[200];
  /* unescaped apostrophe inside the value survives (the quote closes only before ')' or ', key=') */
  assert_int_equal(tars_parse_reply("Action: type(content='It's 5 o'clock')", NULL, &r, err, sizeof err), 0);
  assert_string_equal(r.actions[0].text, "It's 5 o'clock");
  assert_int_equal(r.actions[0].enter, 0);
  tars_reply_free(&r);
  /* "Action:" inside a value is not a marker */
  assert_int_equal(tars_parse_reply("Thought: t\nAction: type(content='Action: go\\n')", NULL, &r, err, sizeof err), 0);
  assert_int_equal(r.n, 1);
  assert_string_equal(r.actions[0].text, "Action: go");
  assert_int_equal(r.actions[0].enter, 1);
  assert_string_equal(r.thought, "t");
  tars_reply_free(&r);
  /* only a newline: press Enter, type nothing */
  assert_int_equal(tars_parse_reply("Action: type(content='\\n')", NULL, &r, err, sizeof err), 0);
  assert_string_equal(r.actions[0].text, "");
  assert_int_equal(r.actions[0].enter, 1);
  tars_reply_free(&r);
  /* three actions, the last without a blank line before it */
  assert_int_equal(tars_parse_reply("Action: hotkey(key='ctrl a')\n\ntype(content='x')\nhotkey(key='Enter')", NULL, &r,
                                    err, sizeof err), 0);
  assert_int_equal(r.n, 3);
  assert_int_equal(r.actions[2].type, TARS_HOTKEY);
  assert_string_equal(r.actions[2].keys[0], "Return");
  assert_string_equal(r.actions[1].raw, "type(content='x')");
  tars_reply_free(&r);
  /* open_app, navigate, call_user, press/release (Doubao) */
  assert_int_equal(tars_parse_reply("Action: open_app(app_name='Settings')\n\nnavigate(content='https://a.b/')\n\n"
                                    "keydown(key='shift')\n\nkeyup(key='shift')\n\ncall_user()", NULL, &r, err,
                                    sizeof err), 0);
  assert_int_equal(r.n, 5);
  assert_int_equal(r.actions[0].type, TARS_OPEN_APP);
  assert_string_equal(r.actions[0].text, "Settings");
  assert_string_equal(r.actions[1].text, "https://a.b/");
  assert_int_equal(r.actions[2].type, TARS_KEY_DOWN);
  assert_int_equal(r.actions[3].type, TARS_KEY_UP);
  assert_string_equal(r.actions[3].keys[0], "Shift_L");
  assert_int_equal(r.actions[4].type, TARS_CALL_USER);
  tars_reply_free(&r);
}

static void test_end_tokens(void **state) {
  (void)state;
  tars_reply r;
  char err[200];
  /* action names in another case */
  assert_int_equal(tars_parse_reply("Action: Left_Double(start_box='(1,2)')", NULL, &r, err, sizeof err), 0);
  assert_int_equal(r.actions[0].type, TARS_LEFT_DOUBLE);
  tars_reply_free(&r);
  assert_int_equal(tars_parse_reply("Thought: t\nAction: finished(content='ok')<|im_end|>\n<|endoftext|>", NULL, &r, err,
                                    sizeof err), 0);
  assert_int_equal(r.n, 1);
  assert_string_equal(r.actions[0].text, "ok");
  assert_string_equal(r.action_text, "finished(content='ok')");
  tars_reply_free(&r);
  /* only at the end: elsewhere it is text of the reply */
  assert_int_equal(tars_parse_reply("Action: type(content='<|im_end|>')", NULL, &r, err, sizeof err), 0);
  assert_string_equal(r.actions[0].text, "<|im_end|>");
  tars_reply_free(&r);
}

static void test_key_names(void **state) {
  (void)state;
  const char *in[] = {"ctrl", "CTRL", "ctrlright", "command", "enter", "\n", "esc", "pgdn", "arrowup", "f1", "F12",
                      "f24", "num5", "printscreen", "!", "@", "A", "7", "browserback", "XF86AudioMute", "apps"};
  const char *out[] = {"Control_L", "Control_L", "Control_R", "Super_L", "Return", "Return", "Escape", "Page_Down",
                       "Up", "F1", "F12", "F24", "KP_5", "Print", "exclam", "at", "a", "7", "XF86Back",
                       "XF86AudioMute", "Menu"};
  for (size_t i = 0; i < sizeof in / sizeof in[0]; i++) {
    const char *k = tars_key_to_keysym_name(in[i]);
    if (!k || strcmp(k, out[i])) fail_msg("%s -> %s (want %s)", in[i], k ? k : "NULL", out[i]);
  }
  assert_null(tars_key_to_keysym_name("f25"));
  assert_null(tars_key_to_keysym_name("f01"));
  assert_null(tars_key_to_keysym_name("ctrlx"));
  tars_reply r;
  char err[200];
  assert_int_equal(tars_parse_reply("Action: hotkey(key='ctrl+shift+page down')", NULL, &r, err, sizeof err), 0);
  assert_int_equal(r.actions[0].nkeys, 3);
  assert_string_equal(r.actions[0].keys[2], "Page_Down");
  tars_reply_free(&r);
  assert_int_equal(tars_parse_reply("Action: hotkey(key=' ')", NULL, &r, err, sizeof err), 0);
  assert_string_equal(r.actions[0].keys[0], "space");
  tars_reply_free(&r);
  /* '+' is the plus key after a separator '+' or first/last, else a separator */
  static const struct {
    const char *key, *want;
  } PLUS[] = {{"ctrl++", "Control_L plus"},       {"ctrl +", "Control_L plus"},      {"ctrl+ +", "Control_L plus"},
              {"+", "plus"},                      {"+ ctrl", "plus Control_L"},      {"ctrl+shift++", "Control_L Shift_L plus"},
              {"ctrl + c", "Control_L c"},        {"ctrl+c", "Control_L c"},         {"ctrl+plus", "Control_L plus"},
              {"shift++ ctrl", "Shift_L plus Control_L"}};
  for (size_t i = 0; i < sizeof PLUS / sizeof PLUS[0]; i++) {
    char reply[80], got[80] = "";
    snprintf(reply, sizeof reply, "Action: hotkey(key='%s')", PLUS[i].key);
    if (tars_parse_reply(reply, NULL, &r, err, sizeof err)) fail_msg("%s: %s", PLUS[i].key, err);
    for (int k = 0; k < r.actions[0].nkeys; k++)
      snprintf(got + strlen(got), sizeof got - strlen(got), "%s%s", k ? " " : "", r.actions[0].keys[k]);
    tars_reply_free(&r);
    if (strcmp(got, PLUS[i].want)) fail_msg("hotkey '%s' -> [%s] (want [%s])", PLUS[i].key, got, PLUS[i].want);
  }
}

/* Every prefix of every vector, and each with one byte replaced by a quote, bracket or backslash: the parser
 * either succeeds with at least one action whose points lie on the screen, or fails with a message and no
 * actions (run under ASan/UBSan in development: no out-of-bounds read on truncated input). */
static void test_truncated_and_mutated(void **state) {
  (void)state;
  static const char MUT[] = "'\"()[]\\=,<>\n";
  int ok = 0, bad = 0;
  for (size_t i = 0; i < sizeof VECS / sizeof VECS[0]; i++) {
    tars_space sp;
    assert_int_equal(tars_space_init(&sp, VECS[i].version, VECS[i].width, VECS[i].height, 78400, 12845056, NULL, 0), 0);
    size_t n = strlen(VECS[i].reply);
    char *buf = malloc(n + 1);
    for (size_t cut = 0; cut <= n; cut++) {
      for (size_t m = 0; m <= sizeof MUT - 1; m++) {
        memcpy(buf, VECS[i].reply, n + 1);
        if (m < sizeof MUT - 1) {
          if (cut == n) continue;
          buf[cut] = MUT[m]; /* mutate instead of cutting */
        } else {
          buf[cut] = 0;
        }
        tars_reply r;
        char err[300] = "";
        if (tars_parse_reply(buf, &sp, &r, err, sizeof err) == 0) {
          assert_true(r.n > 0);
          for (int k = 0; k < r.n; k++) {
            const tars_point *pts[2] = {&r.actions[k].start, &r.actions[k].end};
            for (int j = 0; j < 2; j++)
              if (pts[j]->has) {
                assert_true(pts[j]->x >= 0 && pts[j]->x < sp.width);
                assert_true(pts[j]->y >= 0 && pts[j]->y < sp.height);
              }
          }
          tars_reply_free(&r);
          ok++;
        } else {
          assert_true(strlen(err) > 0);
          assert_int_equal(r.n, 0);
          bad++;
        }
      }
    }
    free(buf);
  }
  /* both outcomes occur many times */
  assert_true(ok > 1000);
  assert_true(bad > 1000);
}

static void test_add_box_tokens(void **state) {
  (void)state;
  const char *in[] = {
      "Thought: (1,2) stays\nAction: click(start_box='(100,200)')",
      "Action: drag(start_box='(1,2)', end_box='(30,40)')",
      "Action: click(start_box='<|box_start|>(1,2)<|box_end|>')",
      "Action: click(start_box='(100, 200)')",
      "Action: click(start_box='(1,2,3,4)')",
      "Action: type(content='start_box=\\'(1,2)\\'')",
      "Action: click(mystart_box='(1,2)')",
      "no marker click(start_box='(5,6)')",
  };
  const char *out[] = {
      "Thought: (1,2) stays\nAction: click(start_box='<|box_start|>(100,200)<|box_end|>')",
      "Action: drag(start_box='<|box_start|>(1,2)<|box_end|>', end_box='<|box_start|>(30,40)<|box_end|>')",
      "Action: click(start_box='<|box_start|>(1,2)<|box_end|>')",
      "Action: click(start_box='(100, 200)')",
      "Action: click(start_box='(1,2,3,4)')",
      "Action: type(content='start_box=\\'(1,2)\\'')",
      "Action: click(mystart_box='(1,2)')",
      "no marker click(start_box='<|box_start|>(5,6)<|box_end|>')",
  };
  for (size_t i = 0; i < sizeof in / sizeof in[0]; i++) {
    char *t = tars_add_box_tokens(in[i]);
    if (strcmp(t, out[i])) fail_msg("%s\n got  %s\n want %s", in[i], t, out[i]);
    free(t);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_vectors),     cmocka_unit_test(test_errors),     cmocka_unit_test(test_fractions),
      cmocka_unit_test(test_zero_is_a_coordinate), cmocka_unit_test(test_py_escapes),
      cmocka_unit_test(test_type_content), cmocka_unit_test(test_key_names),
      cmocka_unit_test(test_truncated_and_mutated), cmocka_unit_test(test_add_box_tokens),
      cmocka_unit_test(test_end_tokens),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
