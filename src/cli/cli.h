/* difflow command line: subcommands. Each returns the process exit status. */
#ifndef DIFFLOW_CLI_H
#define DIFFLOW_CLI_H

#include <signal.h>
#include "args.h"
#include "difflow/core.h"
#include "difflow/gen.h"
#include "difflow/nn.h"

/* Ctrl-C / SIGTERM (signals.c). cli_signals_init: called first thing in main(), before any thread
 * exists; blocks SIGINT and SIGTERM in every thread and starts the one thread that receives them.
 * Returns 0, or -1 when the thread could not start (the signals then keep their default action).
 * cli_signals_catch(flag): from now on a signal stores its number in *flag (set to 0 here) instead
 * of ending the process; NULL restores the default action. */
int cli_signals_init(void);
void cli_signals_catch(volatile sig_atomic_t *flag);

int cmd_train(int argc, char **argv);
int cmd_reflow(int argc, char **argv);
int cmd_sample(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_lm(int argc, char **argv); /* difflow lm train|generate|eval (lm.c) */

/* Writes samples x (n, ...) to `path`: a PNG grid for images, CSV ("x,y") or a density PNG for
 * 2-D points (chosen by the extension). */
dfl_status cli_write_samples(const char *path, const float *x, int n, int ndim, const int *shape);

/* Validates --threads, applies it and loads the checkpoint; prints the error line itself.
 * Returns 0, or the exit status (2 bad flag, 1 unreadable checkpoint). */
int cli_open_model(const char *ckpt, int threads, dfl_model *m, dfl_model_info *info);

/* Draws n samples in chunks of `batch` from one stream seeded by `seed` (so the result does not
 * depend on the chunk size). shape[1..] is the per-sample shape; x receives (n, ...). */
dfl_status cli_sample_chunked(dfl_ctx *ctx, const dfl_model *m, const dfl_sample_cfg *sc, uint64_t seed, int n,
                              int batch, int ndim, const int *shape, float *x, int *nfe);

#endif
