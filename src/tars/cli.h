/* The tars subcommands. Each takes the arguments after the command name, prints its result to stdout and
 * one line per error to stderr, and returns the process exit status (0 ok, 1 failure, 2 bad usage). */
#ifndef TARS_CLI_H
#define TARS_CLI_H

/* tars resize W H [--min-pixels N] [--max-pixels N]: prints "W' H'" (smart_resize, reference/uitars.md 2.1). */
int tars_cmd_resize(int argc, char **argv);
/* tars parse [--model-version 1.0|1.5] [--width W] [--height H] [--min-pixels N] [--max-pixels N]: reads a
 * reply on stdin and prints tars_reply_to_json of it (screen 1920x1080 and version 1.5 by default). */
int tars_cmd_parse(int argc, char **argv);

#endif
