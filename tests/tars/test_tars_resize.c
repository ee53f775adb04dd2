/* smart_resize and linear_resize against the table of reference/uitars.md 3.1 (recomputed with CPython). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "resize.h"

typedef struct {
  long w, h, rw, rh, maxp;
} row;

static const row TABLE[] = {
    {640, 480, 644, 476, 0},     {800, 600, 812, 588, 0},      {1024, 768, 1036, 756, 0},
    {1280, 720, 1288, 728, 0},   {1280, 800, 1288, 812, 0},    {1280, 1024, 1288, 1036, 0},
    {1300, 770, 1288, 784, 0},   {1366, 768, 1372, 756, 0},    {1440, 900, 1428, 896, 0},
    {1536, 864, 1540, 868, 0},   {1600, 900, 1596, 896, 0},    {1680, 1050, 1680, 1064, 0},
    {1920, 1080, 1932, 1092, 0}, {1920, 1200, 1932, 1204, 0},  {2048, 1280, 2044, 1288, 0},
    {2560, 1440, 2548, 1428, 0}, {2560, 1600, 2548, 1596, 0},  {2880, 1800, 2884, 1792, 0},
    {3840, 2160, 3836, 2156, 0}, {5120, 2880, 4760, 2688, 0},  {7680, 4320, 4760, 2688, 0},
    {1522, 1022, 1512, 1008, 0}, {1080, 2400, 1092, 2408, 0},  {1216, 2670, 1204, 2660, 0},
    {224, 224, 280, 280, 0},     {28, 28, 280, 280, 0},        {10, 10, 280, 280, 0},
    /* other max_pixels */
    {1920, 1080, 1344, 756, 1350L * 784}, {1920, 1080, 1932, 1092, 2700L * 784},
    {1920, 1080, 1932, 1092, 5120L * 784}, {2560, 1440, 1932, 1064, 2700L * 784},
    {2560, 1440, 2548, 1428, 5120L * 784}, {3840, 2160, 1932, 1064, 2700L * 784},
    {3840, 2160, 2660, 1484, 5120L * 784}, {1366, 768, 1372, 756, 1350L * 784},
};

static void test_reference_table(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof TABLE / sizeof TABLE[0]; i++) {
    long rh = 0, rw = 0;
    long maxp = TABLE[i].maxp ? TABLE[i].maxp : TARS_MAX_PIXELS;
    assert_int_equal(tars_smart_resize(TABLE[i].h, TABLE[i].w, TARS_MIN_PIXELS, maxp, &rh, &rw, NULL, 0), 0);
    if (rw != TABLE[i].rw || rh != TABLE[i].rh)
      fail_msg("%ldx%ld (max %ld): got %ldx%ld, want %ldx%ld", TABLE[i].w, TABLE[i].h, maxp, rw, rh, TABLE[i].rw,
               TABLE[i].rh);
  }
}

/* Ties happen when a side is 14 mod 28: 14 mod 56 rounds down (even multiple), 42 mod 56 rounds up. */
static void test_half_to_even(void **state) {
  (void)state;
  long rh, rw;
  /* 1022 = 36*28 + 14, 1022/28 = 36.5 -> 36 (even) -> 1008 */
  assert_int_equal(tars_smart_resize(1022, 1522, TARS_MIN_PIXELS, TARS_MAX_PIXELS, &rh, &rw, NULL, 0), 0);
  assert_int_equal(rh, 1008);
  /* 1050 = 37.5 * 28 -> 38 (even) -> 1064 */
  assert_int_equal(tars_smart_resize(1050, 1680, TARS_MIN_PIXELS, TARS_MAX_PIXELS, &rh, &rw, NULL, 0), 0);
  assert_int_equal(rh, 1064);
  assert_int_equal(rw, 1680);
  /* 434 = 15.5 * 28 -> 16 -> 448; 462 = 16.5 * 28 -> 16 -> 448 (round() away from zero would give 476) */
  assert_int_equal(tars_smart_resize(434, 462, TARS_MIN_PIXELS, TARS_MAX_PIXELS, &rh, &rw, NULL, 0), 0);
  assert_int_equal(rh, 448);
  assert_int_equal(rw, 448);
}

static void test_aspect_ratio_limit(void **state) {
  (void)state;
  long rh = -1, rw = -1;
  char err[200] = "";
  assert_int_equal(tars_smart_resize(10, 2010, TARS_MIN_PIXELS, TARS_MAX_PIXELS, &rh, &rw, err, sizeof err), -1);
  assert_non_null(strstr(err, "200"));
  assert_int_equal(rh, -1);
  /* exactly 200 is allowed: 10 x 2000 -> min branch */
  assert_int_equal(tars_smart_resize(10, 2000, TARS_MIN_PIXELS, TARS_MAX_PIXELS, &rh, &rw, err, sizeof err), 0);
  /* beta = sqrt(78400 / 20000) = 1.9799; h = 28 ceil(19.8/28) = 28, w = 28 ceil(3959.8/28) = 3976 */
  assert_int_equal(rh, 28);
  assert_int_equal(rw, 3976);
  assert_int_equal(tars_smart_resize(0, 10, TARS_MIN_PIXELS, TARS_MAX_PIXELS, &rh, &rw, err, sizeof err), -1);
  assert_int_equal(tars_smart_resize(10, 10, 100, 50, &rh, &rw, err, sizeof err), -1);
}

static void test_linear_resize(void **state) {
  (void)state;
  long w, h;
  /* OSWorld 1.0: 1920x1080 with max 1350*28^2 -> 1371x771 */
  assert_int_equal(tars_linear_resize(1920, 1080, 3136, 1350L * 784, &w, &h), 0);
  assert_int_equal(w, 1371);
  assert_int_equal(h, 771);
  /* under the limit: unchanged */
  assert_int_equal(tars_linear_resize(1920, 1080, 3136, 2700L * 784, &w, &h), 0);
  assert_int_equal(w, 1920);
  assert_int_equal(h, 1080);
  /* min branch: 10x10, min 400 -> scale 2 -> 20x20 */
  assert_int_equal(tars_linear_resize(10, 10, 400, 2700L * 784, &w, &h), 0);
  assert_int_equal(w, 20);
  assert_int_equal(h, 20);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_reference_table),
      cmocka_unit_test(test_half_to_even),
      cmocka_unit_test(test_aspect_ratio_limit),
      cmocka_unit_test(test_linear_resize),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
