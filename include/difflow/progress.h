/* difflow progress: a progress bar for long jobs (DESIGN section 9). On a terminal it redraws
 * one line (step, bar, it/s, ETA, loss); otherwise it prints a plain line every `every` steps. */
#ifndef DIFFLOW_PROGRESS_H
#define DIFFLOW_PROGRESS_H

#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    FILE *out;
    const char *label;
    long total, start_step;
    double t0;        /* wall clock at start (seconds) */
    double last_draw;
    int tty;
    long every;       /* non-terminal: print every `every` steps */
} dfl_progress;

/* Monotonic wall clock in seconds. */
double dfl_now(void);
/* Starts a bar for steps start_step+1 .. total on `out` (stderr usually). */
void dfl_progress_start(dfl_progress *p, FILE *out, const char *label, long start_step, long total, long every);
/* Reports that `step` steps are done; `loss` is shown when finite. */
void dfl_progress_update(dfl_progress *p, long step, double loss);
/* Finishes the line. */
void dfl_progress_end(dfl_progress *p);
/* Steps per second since start. */
double dfl_progress_rate(const dfl_progress *p, long step);

#ifdef __cplusplus
}
#endif
#endif
