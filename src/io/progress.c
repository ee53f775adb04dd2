/* Progress bar: terminal redraw or plain lines. */
#include "difflow/progress.h"

#include <math.h>
#include <time.h>
#include <unistd.h>

double dfl_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void dfl_progress_start(dfl_progress *p, FILE *out, const char *label, long start_step, long total, long every)
{
    p->out = out;
    p->label = label;
    p->start_step = start_step;
    p->total = total;
    p->t0 = dfl_now();
    p->last_draw = 0;
    p->tty = isatty(fileno(out));
    p->every = every > 0 ? every : 1;
}

double dfl_progress_rate(const dfl_progress *p, long step)
{
    double dt = dfl_now() - p->t0;
    return dt > 0 ? (double)(step - p->start_step) / dt : 0.0;
}

static void fmt_time(char *b, size_t n, double s)
{
    if (!(s >= 0) || s > 1e7) {
        snprintf(b, n, "--:--");
        return;
    }
    long x = (long)(s + 0.5);
    if (x >= 3600) snprintf(b, n, "%ld:%02ld:%02ld", x / 3600, (x / 60) % 60, x % 60);
    else snprintf(b, n, "%ld:%02ld", x / 60, x % 60);
}

void dfl_progress_update(dfl_progress *p, long step, double loss)
{
    double now = dfl_now();
    int last = step >= p->total;
    if (p->tty) {
        if (!last && now - p->last_draw < 0.1) return;
    } else if (!last && step % p->every != 0) {
        return;
    }
    p->last_draw = now;
    double rate = dfl_progress_rate(p, step);
    char eta[32], el[32];
    fmt_time(eta, sizeof eta, rate > 0 ? (double)(p->total - step) / rate : -1);
    fmt_time(el, sizeof el, now - p->t0);
    if (p->tty) {
        int width = 24, fill = p->total > 0 ? (int)((double)width * step / p->total) : width;
        char bar[32];
        for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '.';
        bar[width] = 0;
        fprintf(p->out, "\r%s %ld/%ld [%s] %.2f it/s  %s<%s", p->label, step, p->total, bar, rate, el, eta);
        if (isfinite(loss)) fprintf(p->out, "  loss %.4f", loss);
        fprintf(p->out, "\x1b[K");
    } else {
        fprintf(p->out, "%s step %ld/%ld  %.2f it/s  elapsed %s  eta %s", p->label, step, p->total, rate, el, eta);
        if (isfinite(loss)) fprintf(p->out, "  loss %.4f", loss);
        fprintf(p->out, "\n");
    }
    fflush(p->out);
}

void dfl_progress_end(dfl_progress *p)
{
    if (p->tty) fprintf(p->out, "\n");
    fflush(p->out);
}
