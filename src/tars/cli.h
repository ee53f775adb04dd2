/* The tars subcommands. Each takes the arguments after the command name, prints its result to stdout and
 * one line per error to stderr, and returns the process exit status (0 ok, 1 failure, 2 bad usage). */
#ifndef TARS_CLI_H
#define TARS_CLI_H

/* tars resize W H [--min-pixels N] [--max-pixels N]: prints "W' H'" (smart_resize, reference/uitars.md 2.1). */
int tars_cmd_resize(int argc, char **argv);
/* tars parse [--model-version 1.0|1.5] [--width W] [--height H] [--min-pixels N] [--max-pixels N]: reads a
 * reply on stdin and prints tars_reply_to_json of it (screen 1920x1080 and version 1.5 by default). */
int tars_cmd_parse(int argc, char **argv);


/* tars prompt [--mode computer|grounding] [--language L] [--prompt-file F] "task": prints the first user text. */
int tars_cmd_prompt(int argc, char **argv);
/* tars screenshot -o FILE.png: captures the X11 root window. */
int tars_cmd_screenshot(int argc, char **argv);
/* tars do [--model-version V] [--dry-run] "reply or action": parses like tars parse (screen size from the
 * display) and performs the actions with XTest; --dry-run prints the JSON instead. */
int tars_cmd_do(int argc, char **argv);
/* tars run --base-url URL --model NAME [...] "task": the agent loop (tars run --help). Exit status: 0 end,
 * 3 call_user, 4 max_loop, 130 stopped by the user, 1 error, 2 bad usage. */
int tars_cmd_run(int argc, char **argv);

#endif
