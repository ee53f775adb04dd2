#include "prompt.h"

#include <stdlib.h>
#include <string.h>

#include "util.h"

static const char COMPUTER[] =
    "You are a GUI agent working on a computer. You are given a task, the actions you have taken so far and "
    "screenshots of the screen, and you decide the single next action.\n"
    "\n"
    "## Output Format\n"
    "```\n"
    "Thought: ...\n"
    "Action: ...\n"
    "```\n"
    "\n"
    "## Action Space\n"
    "click(start_box='<|box_start|>(x1,y1)<|box_end|>')\n"
    "left_double(start_box='<|box_start|>(x1,y1)<|box_end|>')\n"
    "right_single(start_box='<|box_start|>(x1,y1)<|box_end|>')\n"
    "drag(start_box='<|box_start|>(x1,y1)<|box_end|>', end_box='<|box_start|>(x3,y3)<|box_end|>')\n"
    "hotkey(key='ctrl c') # keys in lowercase, separated by one space, at most 3\n"
    "type(content='xxx') # write the content as a Python string literal: escape ', \" and newlines; end it "
    "with \\n to press Enter afterwards\n"
    "scroll(start_box='<|box_start|>(x1,y1)<|box_end|>', direction='down or up or right or left') # shows "
    "more of the page on the side given by direction\n"
    "wait() # pause 5 seconds, then look at a new screenshot\n"
    "finished(content='xxx') # the task is done; content is the answer or a short summary\n"
    "call_user() # the task cannot be done, or it needs the user\n"
    "\n"
    "## Note\n"
    "- Write the Thought in {language}.\n"
    "- In the Thought, make a short plan first, then state in one sentence the next action and the element "
    "it acts on.\n"
    "\n"
    "## User Instruction\n";

static const char GROUNDING[] =
    "You are a GUI agent. Given a screenshot and an instruction, you output the action that carries out the "
    "instruction on the screen.\n"
    "\n"
    "## Output Format\n"
    "```\n"
    "Action: ...\n"
    "```\n"
    "\n"
    "## Action Space\n"
    "click(start_box='<|box_start|>(x1,y1)<|box_end|>')\n"
    "\n"
    "## User Instruction\n";

/* Appends t to b with {language} and {instruction} replaced; sets *used when {instruction} occurred. */
static int subst(tars_buf *b, const char *t, const char *language, const char *task, int *used) {
  while (*t) {
    if (!strncmp(t, "{language}", 10)) {
      if (tars_buf_adds(b, language)) return -1;
      t += 10;
    } else if (!strncmp(t, "{instruction}", 13)) {
      if (tars_buf_adds(b, task)) return -1;
      *used = 1;
      t += 13;
    } else {
      if (tars_buf_add(b, t, 1)) return -1;
      t++;
    }
  }
  return 0;
}

char *tars_prompt_build(tars_mode mode, const char *language, const char *task, const char *template_text) {
  tars_buf b = {0};
  int used = 0;
  const char *t = template_text ? template_text : mode == TARS_MODE_GROUNDING ? GROUNDING : COMPUTER;
  if (subst(&b, t, language ? language : "English", task, &used)) goto fail;
  if (!used) {
    if (template_text) {
      if (b.len && b.data[b.len - 1] != '\n' && tars_buf_adds(&b, "\n")) goto fail;
      if (!strstr(template_text, "## User Instruction") && tars_buf_adds(&b, "\n## User Instruction\n")) goto fail;
    }
    if (tars_buf_adds(&b, task)) goto fail;
  }
  return b.data;
fail:
  tars_buf_free(&b);
  return NULL;
}
