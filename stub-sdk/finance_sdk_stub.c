/*
 * A stand-in for WeCom's libWeWorkFinanceSdk_C.so, for tests and the demo. It implements the
 * same C ABI (WeWorkFinanceSdk_C.h), so the service loads and drives it exactly as it drives the
 * real library, in the same supervised worker process.
 *
 * Where the real SDK talks to WeCom, this one talks to wecom-zone's simulator: the `proxy`
 * argument names the simulator's stub port ("http://127.0.0.1:PORT"). One request per call:
 *   CHAT <corpid> <secret> <seq> <limit>\n
 *   MEDIA <corpid> <secret> <sdkfileid> <indexbuf or ->\n
 * answered by "<rc> <fault> <is_finish> <outindex_len> <data_len>\n" and the bytes. The fault is
 * "-", "segv", "abrt", "hang" or "slow<ms>": the simulator decides how this SDK misbehaves.
 *
 * DecryptData has its own scheme (the real one is not public): encrypt_key must be 88 characters
 * of base64 (64 bytes, else 10008); encrypt_msg is base64 of a 4-byte tag and the plaintext XORed
 * with a keystream, both from the key (splitmix64 seeded with FNV-1a of the key). A wrong key
 * fails the tag (10006); a damaged ciphertext decrypts to damaged bytes with rc 0, as the real SDK
 * does. Like the real SDK, "" and "AAAA" abort the process. Ciphertexts starting with "!SEGV",
 * "!ABRT", "!HANG", "!SLOW:<ms>:<rest>" or "!RC:<code>" misbehave on purpose.
 *
 * StubLiveAllocations() (not in the real ABI) counts the Slice/MediaData objects not yet freed,
 * so tests can check that the caller frees every one on every path.
 */
#include <errno.h>
#include <netdb.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

typedef struct WeWorkFinanceSdk_t {
    char corpid[128];
    char secret[256];
} WeWorkFinanceSdk_t;

typedef struct Slice_t {
    char *buf;
    int len;
} Slice_t;

typedef struct MediaData {
    char *outindexbuf;
    int out_len;
    char *data;
    int data_len;
    int is_finish;
} MediaData_t;

static volatile long live_allocations = 0;

long StubLiveAllocations(void) { return live_allocations; }

WeWorkFinanceSdk_t *NewSdk(void) { return calloc(1, sizeof(WeWorkFinanceSdk_t)); }

void DestroySdk(WeWorkFinanceSdk_t *sdk) { free(sdk); }

static int plain_token(const char *text, size_t max) {
    size_t n = strlen(text);
    if (n == 0 || n >= max) return 0;
    for (size_t i = 0; i < n; i++) {
        if (text[i] <= ' ' || text[i] == 127) return 0;
    }
    return 1;
}

int Init(WeWorkFinanceSdk_t *sdk, const char *corpid, const char *secret) {
    if (!sdk || !corpid || !secret) return 10000;
    if (!plain_token(corpid, sizeof sdk->corpid) || !plain_token(secret, sizeof sdk->secret)) return 10000;
    strcpy(sdk->corpid, corpid);
    strcpy(sdk->secret, secret);
    return 0;
}

Slice_t *NewSlice(void) {
    Slice_t *slice = calloc(1, sizeof(Slice_t));
    if (slice) __sync_fetch_and_add(&live_allocations, 1);
    return slice;
}

void FreeSlice(Slice_t *slice) {
    if (!slice) return;
    free(slice->buf);
    free(slice);
    __sync_fetch_and_sub(&live_allocations, 1);
}

char *GetContentFromSlice(Slice_t *slice) { return slice ? slice->buf : NULL; }
int GetSliceLen(Slice_t *slice) { return slice ? slice->len : 0; }

MediaData_t *NewMediaData(void) {
    MediaData_t *media = calloc(1, sizeof(MediaData_t));
    if (media) __sync_fetch_and_add(&live_allocations, 1);
    return media;
}

void FreeMediaData(MediaData_t *media) {
    if (!media) return;
    free(media->outindexbuf);
    free(media->data);
    free(media);
    __sync_fetch_and_sub(&live_allocations, 1);
}

char *GetOutIndexBuf(MediaData_t *media) { return media ? media->outindexbuf : NULL; }
char *GetData(MediaData_t *media) { return media ? media->data : NULL; }
int GetIndexLen(MediaData_t *media) { return media ? media->out_len : 0; }
int GetDataLen(MediaData_t *media) { return media ? media->data_len : 0; }
int IsMediaDataFinish(MediaData_t *media) { return media ? media->is_finish : 0; }

/* ---- misbehaviour on purpose ---- */

static void crash_segv(void) {
    volatile int *nowhere = NULL;
    *nowhere = 1;
    raise(SIGSEGV);
}

static void hang_forever(void) {
    for (;;) pause();
}

/* Acts on a fault word from the simulator; returns only for "-" and "slow<ms>". */
static void act(const char *fault) {
    if (strcmp(fault, "segv") == 0) crash_segv();
    if (strcmp(fault, "abrt") == 0) abort();
    if (strcmp(fault, "hang") == 0) hang_forever();
    if (strncmp(fault, "slow", 4) == 0) usleep((useconds_t)atoi(fault + 4) * 1000);
}

/* ---- the simulator connection ---- */

static int connect_to(const char *proxy, int timeout_s) {
    const char *start = strstr(proxy, "://");
    start = start ? start + 3 : proxy;
    char host[256];
    size_t n = strcspn(start, "/");
    if (n == 0 || n >= sizeof host) return -1;
    memcpy(host, start, n);
    host[n] = 0;
    char *colon = strrchr(host, ':');
    if (!colon) return -1;
    *colon = 0;
    struct addrinfo hints = {0}, *found = NULL;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host, colon + 1, &hints, &found) != 0) return -1;
    int fd = socket(found->ai_family, found->ai_socktype, found->ai_protocol);
    if (fd >= 0) {
        struct timeval tv = {timeout_s > 0 ? timeout_s : 5, 0};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        if (connect(fd, found->ai_addr, found->ai_addrlen) != 0) {
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(found);
    return fd;
}

static int read_exact(int fd, char *buf, size_t len) {
    size_t got = 0;
    while (got < len) {
        ssize_t r = recv(fd, buf + got, len - got, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        got += (size_t)r;
    }
    return 0;
}

struct answer {
    int rc;
    char fault[32];
    int is_finish;
    char *outindex;
    int outindex_len;
    char *data;
    int data_len;
};

/* Sends one request line and reads the answer; 10001 (network error) when anything fails. */
static int ask(const char *proxy, int timeout_s, const char *request, struct answer *answer) {
    memset(answer, 0, sizeof *answer);
    int fd = connect_to(proxy, timeout_s);
    if (fd < 0) return 10001;
    size_t len = strlen(request);
    if (send(fd, request, len, MSG_NOSIGNAL) != (ssize_t)len) {
        close(fd);
        return 10001;
    }
    char header[160];
    size_t used = 0;
    for (;;) {
        if (used + 1 >= sizeof header || read_exact(fd, header + used, 1) != 0) {
            close(fd);
            return 10001;
        }
        if (header[used] == '\n') break;
        used++;
    }
    header[used] = 0;
    if (sscanf(header, "%d %31s %d %d %d", &answer->rc, answer->fault, &answer->is_finish, &answer->outindex_len,
               &answer->data_len) != 5 ||
        answer->outindex_len < 0 || answer->data_len < 0 || answer->outindex_len > (1 << 20) ||
        answer->data_len > (64 << 20)) {
        close(fd);
        return 10002;
    }
    answer->outindex = calloc(1, (size_t)answer->outindex_len + 1);
    answer->data = calloc(1, (size_t)answer->data_len + 1);
    if (!answer->outindex || !answer->data || read_exact(fd, answer->outindex, (size_t)answer->outindex_len) != 0 ||
        read_exact(fd, answer->data, (size_t)answer->data_len) != 0) {
        free(answer->outindex);
        free(answer->data);
        close(fd);
        return 10001;
    }
    close(fd);
    act(answer->fault);
    return 0;
}

int GetChatData(WeWorkFinanceSdk_t *sdk, unsigned long long seq, unsigned int limit, const char *proxy,
                const char *passwd, int timeout, Slice_t *chatDatas) {
    (void)passwd;
    if (!sdk || !chatDatas || !proxy || limit == 0 || limit > 1000 || sdk->corpid[0] == 0) return 10000;
    char request[512];
    snprintf(request, sizeof request, "CHAT %s %s %llu %u\n", sdk->corpid, sdk->secret, seq, limit);
    struct answer answer;
    int failed = ask(proxy, timeout, request, &answer);
    if (failed) return failed;
    free(answer.outindex);
    if (answer.rc != 0) {
        free(answer.data);
        return answer.rc;
    }
    free(chatDatas->buf);
    chatDatas->buf = answer.data;
    chatDatas->len = answer.data_len;
    return 0;
}

int GetMediaData(WeWorkFinanceSdk_t *sdk, const char *indexbuf, const char *sdkFileid, const char *proxy,
                 const char *passwd, int timeout, MediaData_t *media_data) {
    (void)passwd;
    if (!sdk || !media_data || !proxy || !sdkFileid || !plain_token(sdkFileid, 4096)) return 10000;
    if (indexbuf && indexbuf[0] && !plain_token(indexbuf, 4096)) return 10000;
    size_t size = strlen(sdkFileid) + (indexbuf ? strlen(indexbuf) : 0) + 512;
    char *request = malloc(size);
    if (!request) return 10003;
    snprintf(request, size, "MEDIA %s %s %s %s\n", sdk->corpid, sdk->secret, sdkFileid,
             indexbuf && indexbuf[0] ? indexbuf : "-");
    struct answer answer;
    int failed = ask(proxy, timeout, request, &answer);
    free(request);
    if (failed) return failed;
    if (answer.rc != 0) {
        free(answer.outindex);
        free(answer.data);
        return answer.rc;
    }
    free(media_data->outindexbuf);
    free(media_data->data);
    media_data->outindexbuf = answer.outindex;
    media_data->out_len = answer.outindex_len;
    media_data->data = answer.data;
    media_data->data_len = answer.data_len;
    media_data->is_finish = answer.is_finish;
    return 0;
}

/* ---- DecryptData ---- */

static int base64_value(char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

/* Standard base64, padding optional; returns the decoded length or -1. */
static long base64_decode(const char *text, unsigned char *out, size_t capacity) {
    size_t n = strlen(text);
    while (n > 0 && text[n - 1] == '=') n--;
    unsigned long bits = 0;
    int have = 0;
    size_t written = 0;
    for (size_t i = 0; i < n; i++) {
        int v = base64_value(text[i]);
        if (v < 0) return -1;
        bits = (bits << 6) | (unsigned long)v;
        have += 6;
        if (have >= 8) {
            have -= 8;
            if (written >= capacity) return -1;
            out[written++] = (unsigned char)(bits >> have);
        }
    }
    return (long)written;
}

static uint64_t splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static uint64_t fnv1a(const char *text) {
    uint64_t hash = 0xcbf29ce484222325ULL;
    for (; *text; text++) {
        hash ^= (unsigned char)*text;
        hash *= 0x100000001b3ULL;
    }
    return hash;
}

int DecryptData(const char *encrypt_key, const char *encrypt_msg, Slice_t *msg) {
    if (!encrypt_key || !encrypt_msg || !msg) return 10000;
    if (strcmp(encrypt_msg, "") == 0 || strcmp(encrypt_msg, "AAAA") == 0) abort(); /* as the real SDK */
    if (strncmp(encrypt_msg, "!SEGV", 5) == 0) crash_segv();
    if (strncmp(encrypt_msg, "!ABRT", 5) == 0) abort();
    if (strncmp(encrypt_msg, "!HANG", 5) == 0) hang_forever();
    if (strncmp(encrypt_msg, "!RC:", 4) == 0) return atoi(encrypt_msg + 4);
    if (strncmp(encrypt_msg, "!SLOW:", 6) == 0) {
        usleep((useconds_t)atoi(encrypt_msg + 6) * 1000);
        const char *rest = strchr(encrypt_msg + 6, ':');
        encrypt_msg = rest ? rest + 1 : "";
    }
    unsigned char key[80];
    if (strlen(encrypt_key) != 88 || base64_decode(encrypt_key, key, sizeof key) != 64) return 10008;
    size_t capacity = strlen(encrypt_msg);
    unsigned char *sealed = malloc(capacity + 1);
    if (!sealed) return 10003;
    long len = base64_decode(encrypt_msg, sealed, capacity);
    if (len < 5) {
        free(sealed);
        return 10006;
    }
    uint64_t state = fnv1a(encrypt_key);
    uint64_t tag = splitmix64(&state);
    for (int i = 0; i < 4; i++) {
        if (sealed[i] != (unsigned char)(tag >> (8 * i))) {
            free(sealed);
            return 10006;
        }
    }
    size_t plain_len = (size_t)len - 4;
    char *plain = malloc(plain_len + 1);
    if (!plain) {
        free(sealed);
        return 10003;
    }
    uint64_t stream = 0;
    for (size_t i = 0; i < plain_len; i++) {
        if (i % 8 == 0) stream = splitmix64(&state);
        plain[i] = (char)(sealed[4 + i] ^ (unsigned char)(stream >> (8 * (i % 8))));
    }
    plain[plain_len] = 0;
    free(sealed);
    free(msg->buf);
    msg->buf = plain;
    msg->len = (int)plain_len;
    return 0;
}
