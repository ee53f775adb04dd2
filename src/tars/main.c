/* tars: a native runtime for UI-TARS GUI agents on X11 (docs/TARS.md). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static void usage(FILE *f) {
  fprintf(f,
          "usage: tars COMMAND [options]\n"
          "  resize W H [--min-pixels N] [--max-pixels N]   smart_resize of a WxH screenshot -> W' H'\n"
          "  parse [--model-version 1.0|1.5] [--width W] [--height H]   a model reply on stdin -> actions JSON\n"
          "  prompt [--mode computer|grounding] [--language L] \"task\"   print the first user text\n"
          "  screenshot -o FILE.png                             capture the X11 screen\n"
          "  do [--model-version V] [--dry-run] \"action(...)\"   parse actions and perform them on X11\n"
          "  run --base-url URL --model NAME [options] \"task\"   the agent loop (tars run --help)\n");
}

int main(int argc, char **argv) {
  if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
    usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  const char *cmd = argv[1];
  if (!strcmp(cmd, "resize")) return tars_cmd_resize(argc - 2, argv + 2);
  if (!strcmp(cmd, "parse")) return tars_cmd_parse(argc - 2, argv + 2);
  if (!strcmp(cmd, "prompt")) return tars_cmd_prompt(argc - 2, argv + 2);
  if (!strcmp(cmd, "screenshot")) return tars_cmd_screenshot(argc - 2, argv + 2);
  if (!strcmp(cmd, "do")) return tars_cmd_do(argc - 2, argv + 2);
  if (!strcmp(cmd, "run")) return tars_cmd_run(argc - 2, argv + 2);
  fprintf(stderr, "tars: unknown command \"%s\" (try tars --help)\n", cmd);
  return 2;
}
