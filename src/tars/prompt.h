/* System prompts for UI-TARS models, in the project's own wording, with the structure of the published
 * templates (role line, output format, action space, notes, user instruction; reference/uitars.md 1.4). */
#ifndef TARS_PROMPT_H
#define TARS_PROMPT_H

typedef enum { TARS_MODE_COMPUTER, TARS_MODE_GROUNDING } tars_mode;

/* Builds the first user text: the prompt for mode followed by the task. language names the language of the
 * Thought (e.g. "English"; ignored in grounding mode). Coordinates are asked for in the box-token form
 * start_box='<|box_start|>(x1,y1)<|box_end|>' that both 1.0 and 1.5 emit (UI-TARS#183). When template is
 * not NULL it replaces the built-in prompt; "{language}" and "{instruction}" in it are substituted, and
 * the task is appended after a "## User Instruction" heading when it has no "{instruction}".
 * Returns a malloc'ed string or NULL on allocation failure. */
char *tars_prompt_build(tars_mode mode, const char *language, const char *task, const char *template_text);

#endif
