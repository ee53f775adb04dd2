/* OpenAI-compatible chat-completions client over libcurl. */
#ifndef TARS_CLIENT_H
#define TARS_CLIENT_H

typedef struct {
  const char *base_url;   /* e.g. http://127.0.0.1:8000/v1; "/chat/completions" is appended */
  const char *model;      /* the served model name */
  const char *api_key;    /* sent as "Authorization: Bearer KEY" when not NULL */
  double temperature;     /* sampling temperature (UI-TARS-desktop uses 0) */
  double top_p;           /* nucleus mass (UTD 0.7; OSWorld 0.9) */
  long max_tokens;        /* reply budget in tokens */
  long timeout_s;         /* whole-request timeout in seconds */
  int retries;            /* extra attempts after a failed one */
  long retry_delay_ms;    /* first backoff; doubled after each failed attempt */
  volatile int *stop;     /* when not NULL and set, transfers and backoff waits end early */
} tars_client_cfg;

/* Default settings: temperature 0, top_p 0.7, max_tokens 1000, timeout 60 s, 3 retries, 1000 ms backoff. */
void tars_client_defaults(tars_client_cfg *c);

/* POSTs {"model", "messages", "temperature", "top_p", "max_tokens"} (messages_json is a JSON array text) and
 * returns the first choice's message content (a string, or the concatenated text parts) as a malloc'ed
 * string in *reply. Network errors, timeouts, HTTP 429 and 5xx, and undecodable bodies are retried with
 * exponential backoff; other HTTP errors fail at once. Returns 0, or -1 with one line in err (e.g.
 * "HTTP 500 from http://...: <body excerpt>" or "cannot connect to ..."). *attempts gets the number of
 * requests made (may be NULL). */
int tars_chat(const tars_client_cfg *c, const char *messages_json, char **reply, int *attempts, char *err,
              int errlen);

/* Extracts the reply text from a chat-completions response body. Returns a malloc'ed string or NULL with a
 * message in err (not JSON, an "error" object, no choices, empty content). */
char *tars_chat_reply_text(const char *body, char *err, int errlen);

#endif
