#include "client.h"

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

void tars_client_defaults(tars_client_cfg *c) {
  memset(c, 0, sizeof *c);
  c->temperature = 0.0;
  c->top_p = 0.7;
  c->max_tokens = 1000;
  c->timeout_s = 60;
  c->retries = 3;
  c->retry_delay_ms = 1000;
}

static size_t on_body(char *p, size_t size, size_t n, void *ud) {
  tars_buf *b = ud;
  return tars_buf_add(b, p, size * n) ? 0 : size * n;
}

static int on_progress(void *ud, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d) {
  (void)a, (void)b, (void)c, (void)d;
  volatile int *stop = ud;
  return stop && *stop;
}

static void one_line(const char *s, char *out, size_t n) {
  size_t k = 0;
  for (; s && *s && k + 4 < n && k < 200; s++) out[k++] = (*s == '\n' || *s == '\r') ? ' ' : *s;
  if (s && *s) {
    memcpy(out + k, "...", 3);
    k += 3;
  }
  out[k] = 0;
}

char *tars_chat_reply_text(const char *body, char *err, int errlen) {
  char ex[240];
  one_line(body, ex, sizeof ex);
  cJSON *root = cJSON_Parse(body);
  if (!root) {
    snprintf(err, errlen, "the server's response is not JSON: \"%s\"", ex);
    return NULL;
  }
  char *out = NULL;
  cJSON *e = cJSON_GetObjectItemCaseSensitive(root, "error");
  cJSON *choices = cJSON_GetObjectItemCaseSensitive(root, "choices");
  cJSON *c0 = cJSON_IsArray(choices) ? cJSON_GetArrayItem(choices, 0) : NULL;
  cJSON *msg = c0 ? cJSON_GetObjectItemCaseSensitive(c0, "message") : NULL;
  cJSON *content = msg ? cJSON_GetObjectItemCaseSensitive(msg, "content") : NULL;
  if (e && !cJSON_IsNull(e)) {
    cJSON *m = cJSON_IsObject(e) ? cJSON_GetObjectItemCaseSensitive(e, "message") : e;
    snprintf(err, errlen, "the server returned an error: %s",
             cJSON_IsString(m) ? m->valuestring : ex);
  } else if (!c0) {
    snprintf(err, errlen, "the server's response has no choices: \"%s\"", ex);
  } else if (cJSON_IsString(content)) {
    out = strdup(content->valuestring);
  } else if (cJSON_IsArray(content)) {
    tars_buf b = {0};
    cJSON *part;
    cJSON_ArrayForEach(part, content) {
      cJSON *t = cJSON_GetObjectItemCaseSensitive(part, "text");
      if (cJSON_IsString(t)) tars_buf_adds(&b, t->valuestring);
    }
    out = b.data;
    if (!out) snprintf(err, errlen, "the server's reply has no text: \"%s\"", ex);
  } else {
    snprintf(err, errlen, "the server's reply has no message content: \"%s\"", ex);
  }
  if (out && !*out) {
    free(out);
    out = NULL;
    snprintf(err, errlen, "the server returned an empty reply");
  }
  cJSON_Delete(root);
  return out;
}

static char *build_request(const tars_client_cfg *c, const char *messages_json) {
  cJSON *model = cJSON_CreateString(c->model ? c->model : "");
  char *m = model ? cJSON_PrintUnformatted(model) : NULL;
  cJSON_Delete(model);
  if (!m) return NULL;
  tars_buf b = {0};
  char num[160];
  snprintf(num, sizeof num, ",\"temperature\":%.17g,\"top_p\":%.17g,\"max_tokens\":%ld,\"stream\":false}",
           c->temperature, c->top_p, c->max_tokens);
  int bad = tars_buf_adds(&b, "{\"model\":") || tars_buf_adds(&b, m) || tars_buf_adds(&b, ",\"messages\":") ||
            tars_buf_adds(&b, messages_json) || tars_buf_adds(&b, num);
  free(m);
  if (bad) tars_buf_free(&b);
  return b.data;
}

int tars_chat(const tars_client_cfg *c, const char *messages_json, char **reply, int *attempts, char *err,
              int errlen) {
  static int inited;
  if (!inited) {
    if (curl_global_init(CURL_GLOBAL_DEFAULT)) {
      snprintf(err, errlen, "libcurl initialisation failed");
      return -1;
    }
    inited = 1;
  }
  *reply = NULL;
  if (attempts) *attempts = 0;
  char *body = build_request(c, messages_json);
  if (!body) {
    snprintf(err, errlen, "out of memory building the request");
    return -1;
  }
  tars_buf url = {0};
  size_t bl = strlen(c->base_url);
  while (bl && c->base_url[bl - 1] == '/') bl--;
  tars_buf_add(&url, c->base_url, bl);
  tars_buf_adds(&url, "/chat/completions");
  struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: application/json");
  char auth[512];
  if (c->api_key && *c->api_key) {
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", c->api_key);
    hdr = curl_slist_append(hdr, auth);
  }
  int rc = -1;
  long delay = c->retry_delay_ms;
  for (int attempt = 0; attempt <= c->retries; attempt++) {
    if (c->stop && *c->stop) {
      snprintf(err, errlen, "stopped by the user");
      break;
    }
    if (attempt > 0) {
      for (long t = 0; t < delay && !(c->stop && *c->stop); t += 50) tars_sleep_ms(delay - t < 50 ? delay - t : 50);
      delay *= 2;
      if (c->stop && *c->stop) {
        snprintf(err, errlen, "stopped by the user");
        break;
      }
    }
    if (attempts) (*attempts)++;
    CURL *h = curl_easy_init();
    if (!h) {
      snprintf(err, errlen, "libcurl: cannot create a handle");
      break;
    }
    tars_buf resp = {0};
    char cerr[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(h, CURLOPT_URL, url.data);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &resp);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, c->timeout_s);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, c->timeout_s < 10 ? c->timeout_s : 10L);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, cerr);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, (void *)c->stop);
    CURLcode cc = curl_easy_perform(h);
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(h);
    int retry = 1;
    if (cc == CURLE_ABORTED_BY_CALLBACK) {
      snprintf(err, errlen, "stopped by the user");
      retry = 0;
    } else if (cc != CURLE_OK) {
      snprintf(err, errlen, "cannot reach %s: %s", url.data, *cerr ? cerr : curl_easy_strerror(cc));
    } else if (status < 200 || status >= 300) {
      char ex[240];
      one_line(resp.data ? resp.data : "", ex, sizeof ex);
      snprintf(err, errlen, "HTTP %ld from %s: %s", status, url.data, ex);
      retry = status == 429 || status >= 500;
    } else {
      char *text = tars_chat_reply_text(resp.data ? resp.data : "", err, errlen);
      if (text) {
        *reply = text;
        rc = 0;
      }
    }
    tars_buf_free(&resp);
    if (rc == 0 || !retry) break;
    if (attempt < c->retries) fprintf(stderr, "tars: %s (retrying)\n", err);
  }
  curl_slist_free_all(hdr);
  tars_buf_free(&url);
  free(body);
  return rc;
}
