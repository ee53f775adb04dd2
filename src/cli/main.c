/* difflow: train, sample and inspect generative models (DESIGN section 9). */
#include <stdio.h>
#include <string.h>

#include "cli.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: difflow <command> [options]\n"
            "\n"
            "commands:\n"
            "  train    train a model (default: flow matching on Fashion-MNIST; also nice, realnvp, glow, cnf) into runs/NAME/\n"
            "  reflow   train the next rectified flow on (noise, sample) pairs of a flow-matching model\n"
            "  sample   draw samples from a checkpoint into a PNG grid (images) or CSV (2-D)\n"
            "  info     describe a checkpoint: architecture, method, step, tensors\n"
            "  eval     test log-likelihood (nats, bits/dim): PF-ODE, or exact for normalizing flows\n"
            "  bench    training steps/s and sampling images/s of a reference configuration\n"
            "  lm       byte-level Transformer language model: lm train | generate | eval (positional encodings)\n"
            "\n"
            "Run 'difflow <command> --help' for the options of a command.\n");
}

int main(int argc, char **argv)
{
    cli_signals_init(); /* before any thread exists: see signals.c */
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *c = argv[1];
    if (!strcmp(c, "help") && argc > 2) { /* "difflow help train" == "difflow train --help" */
        char *h[2] = {argv[2], "--help"};
        return main(3, (char *[]){argv[0], h[0], h[1], NULL});
    }
    if (!strcmp(c, "-h") || !strcmp(c, "--help") || !strcmp(c, "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(c, "train")) return cmd_train(argc - 2, argv + 2);
    if (!strcmp(c, "reflow")) return cmd_reflow(argc - 2, argv + 2);
    if (!strcmp(c, "sample")) return cmd_sample(argc - 2, argv + 2);
    if (!strcmp(c, "info")) return cmd_info(argc - 2, argv + 2);
    if (!strcmp(c, "bench")) return cmd_bench(argc - 2, argv + 2);
    if (!strcmp(c, "eval")) return cmd_eval(argc - 2, argv + 2);
    if (!strcmp(c, "lm")) return cmd_lm(argc - 2, argv + 2);
    fprintf(stderr, "difflow: error: unknown command '%s' (commands: train, reflow, sample, info, eval, bench, lm; see difflow --help)\n", c);
    return 2;
}
