/* webtier.balancer._wire: one-call scanners for the common HTTP/1.1 heads.
 *
 * The proxy parses with httptools (llhttp), whose per-field callbacks into Python
 * cost more than the rest of a proxied request. These scanners read a whole head
 * in one call and build what the proxy forwards, for a strict subset of messages:
 * the ones well-formed clients and servers send all day. They never refuse
 * anything: for a head they do not fully like (incomplete, unusual, malformed,
 * with a body framing other than a plain Content-Length, over a limit) they
 * return None and the caller hands the same bytes to httptools, whose path has
 * every check and every error answer. So they only have to be exact on what they
 * accept; tests/balancer/test_wire.py holds them equal to the httptools path.
 *
 *   scan_request(data, offset, client_ip, trusted, max_url, max_header_bytes, max_headers)
 *       -> (end, method, target, headers, http10, keep_alive, upstream_head, request_id) | None
 *   scan_response(data, offset)
 *       -> (end, status, head_prefix, length, keep_alive) | None
 *   new_request_id() -> bytes
 *   set_request_id_prefix(prefix)
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

enum {
    C_TOKEN = 1,      /* tchar (RFC 9110 §5.6.2) */
    C_TARGET = 2,     /* visible ASCII but '#' (origin-form target bytes accepted here) */
    C_VALUE = 4,      /* field-value bytes accepted here: visible ASCII, SP, HTAB */
    C_HOST = 8,       /* reg-name letters, digits, '.', '-' */
    C_ID = 16,        /* X-Request-ID characters the proxy keeps */
};

static unsigned char cls[256];

static void init_classes(void) {
    const char *tchars = "!#$%&'*+-.^_`|~";
    for (int c = 0; c < 256; c++) {
        unsigned char k = 0;
        int alnum = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
        if (alnum || (c && strchr(tchars, c)))
            k |= C_TOKEN;
        if (c > 0x20 && c < 0x7f && c != '#')
            k |= C_TARGET;
        if ((c >= 0x20 && c < 0x7f) || c == '\t')
            k |= C_VALUE;
        if (alnum || c == '.' || c == '-')
            k |= C_HOST;
        if (alnum || c == '-' || c == '_' || c == '.' || c == ':')
            k |= C_ID;
        cls[c] = k;
    }
}

/* Case-insensitive comparison of a field name with a lower-case literal. */
static int name_is(const char *p, Py_ssize_t n, const char *lower) {
    Py_ssize_t i = 0;
    for (; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c >= 'A' && c <= 'Z')
            c += 32;
        if (lower[i] == '\0' || c != (unsigned char)lower[i])
            return 0;
    }
    return lower[i] == '\0';
}

/* Field names whose message the scanners leave to httptools: framing, upgrades, hop-by-hop. */
static int is_unhandled_name(const char *p, Py_ssize_t n) {
    switch (n) {
    case 2: return name_is(p, n, "te");
    case 7: return name_is(p, n, "upgrade") || name_is(p, n, "trailer");
    case 10: return name_is(p, n, "keep-alive");
    case 14: return name_is(p, n, "content-length");
    case 16: return name_is(p, n, "proxy-connection");
    case 17: return name_is(p, n, "transfer-encoding");
    case 18: return name_is(p, n, "proxy-authenticate");
    case 19: return name_is(p, n, "proxy-authorization");
    default: return 0;
    }
}

enum { CONN_NONE, CONN_KEEP_ALIVE, CONN_CLOSE };

/* A Connection value the scanners handle: exactly "keep-alive" or "close" (any case). */
static int connection_kind(const char *p, Py_ssize_t n) {
    if (name_is(p, n, "keep-alive"))
        return CONN_KEEP_ALIVE;
    if (name_is(p, n, "close"))
        return CONN_CLOSE;
    return -1;
}

/* A growable byte buffer on the stack first. */
typedef struct {
    char *p;
    Py_ssize_t len, cap;
    char small[1024];
} Buf;

static void buf_init(Buf *b) {
    b->p = b->small;
    b->len = 0;
    b->cap = sizeof b->small;
}

static int buf_put(Buf *b, const char *s, Py_ssize_t n) {
    if (b->len + n > b->cap) {
        Py_ssize_t cap = b->cap * 2;
        while (cap < b->len + n)
            cap *= 2;
        char *p = PyMem_Malloc((size_t)cap);
        if (p == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        memcpy(p, b->p, (size_t)b->len);
        if (b->p != b->small)
            PyMem_Free(b->p);
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, (size_t)n);
    b->len += n;
    return 0;
}

#define PUT(b, s, n) do { if (buf_put((b), (s), (n)) < 0) goto error; } while (0)
#define PUTS(b, lit) PUT((b), (lit), (Py_ssize_t)(sizeof(lit) - 1))

static void buf_free(Buf *b) {
    if (b->p != b->small)
        PyMem_Free(b->p);
}

/* One field line: name ":" OWS value CRLF, with no trailing OWS and a non-empty value.
 * Returns 1 and fills the spans, 0 when the bytes are not such a line (or not all here). */
typedef struct {
    const char *name, *value;
    Py_ssize_t name_len, value_len;
} Field;

static int scan_field(const char *p, const char *end, const char **next, Field *f) {
    const char *s = p;
    while (s < end && (cls[(unsigned char)*s] & C_TOKEN))
        s++;
    if (s == p || s >= end || *s != ':')
        return 0;
    f->name = p;
    f->name_len = s - p;
    s++;
    while (s < end && (*s == ' ' || *s == '\t'))
        s++;
    const char *v = s;
    while (s < end && (cls[(unsigned char)*s] & C_VALUE))
        s++;
    if (end - s < 2 || s[0] != '\r' || s[1] != '\n' || s == v || s[-1] == ' ' || s[-1] == '\t')
        return 0;
    f->value = v;
    f->value_len = s - v;
    *next = s + 2;
    return 1;
}

/* host [":" port] with a reg-name of letters, digits, dots and dashes. */
static int simple_host(const char *p, Py_ssize_t n) {
    Py_ssize_t i = 0;
    while (i < n && (cls[(unsigned char)p[i]] & C_HOST))
        i++;
    if (i == 0)
        return 0;
    if (i == n)
        return 1;
    if (p[i] != ':')
        return 0;
    for (i++; i < n; i++)
        if (p[i] < '0' || p[i] > '9')
            return 0;
    return 1;
}

static int good_request_id(const char *p, Py_ssize_t n) {
    if (n < 1 || n > 128)
        return 0;
    for (Py_ssize_t i = 0; i < n; i++)
        if (!(cls[(unsigned char)p[i]] & C_ID))
            return 0;
    return 1;
}

/* -- request ids -------------------------------------------------------------------------- */

static char id_prefix[32] = "000000000000";
static Py_ssize_t id_prefix_len = 12;
static unsigned long long id_counter = 0;

static PyObject *make_request_id(void) {
    char out[32 + 12];
    memcpy(out, id_prefix, (size_t)id_prefix_len);
    unsigned long long n = ++id_counter & 0xFFFFFFFFFFFFULL;
    static const char hex[] = "0123456789abcdef";
    for (int i = 11; i >= 0; i--) {
        out[id_prefix_len + i] = hex[n & 15];
        n >>= 4;
    }
    return PyBytes_FromStringAndSize(out, id_prefix_len + 12);
}

static PyObject *py_new_request_id(PyObject *self, PyObject *unused) {
    return make_request_id();
}

static PyObject *py_set_request_id_prefix(PyObject *self, PyObject *arg) {
    char *p;
    Py_ssize_t n;
    if (PyBytes_AsStringAndSize(arg, &p, &n) < 0)
        return NULL;
    if (n < 1 || n > 32 || !good_request_id(p, n)) {
        PyErr_SetString(PyExc_ValueError, "a request id prefix has 1 to 32 letters, digits, '-', '_', '.', ':'");
        return NULL;
    }
    memcpy(id_prefix, p, (size_t)n);
    id_prefix_len = n;
    Py_RETURN_NONE;
}

/* -- requests ----------------------------------------------------------------------------- */

static PyObject *METHODS[7];
static const char *const METHOD_NAMES[7] = {"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"};

static PyObject *known_method(const char *p, Py_ssize_t n) {
    for (int i = 0; i < 7; i++)
        if ((Py_ssize_t)strlen(METHOD_NAMES[i]) == n && memcmp(p, METHOD_NAMES[i], (size_t)n) == 0)
            return METHODS[i];
    return NULL;
}

static PyObject *field_tuple(const Field *f) {
    PyObject *name = PyBytes_FromStringAndSize(f->name, f->name_len);
    if (name == NULL)
        return NULL;
    PyObject *value = PyBytes_FromStringAndSize(f->value, f->value_len);
    if (value == NULL) {
        Py_DECREF(name);
        return NULL;
    }
    PyObject *t = PyTuple_New(2);
    if (t == NULL) {
        Py_DECREF(name);
        Py_DECREF(value);
        return NULL;
    }
    PyTuple_SET_ITEM(t, 0, name);
    PyTuple_SET_ITEM(t, 1, value);
    return t;
}

static PyObject *py_scan_request(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 7 || !PyBytes_CheckExact(args[0]) || !PyBytes_CheckExact(args[2])) {
        PyErr_SetString(PyExc_TypeError,
                        "scan_request(data: bytes, offset: int, client_ip: bytes, trusted: bool, "
                        "max_url: int, max_header_bytes: int, max_headers: int)");
        return NULL;
    }
    Py_ssize_t offset, max_url, max_header_bytes, max_headers;
    int trusted;
    if ((offset = PyLong_AsSsize_t(args[1])) == -1 && PyErr_Occurred())
        return NULL;
    if ((trusted = PyObject_IsTrue(args[3])) < 0)
        return NULL;
    if ((max_url = PyLong_AsSsize_t(args[4])) == -1 && PyErr_Occurred())
        return NULL;
    if ((max_header_bytes = PyLong_AsSsize_t(args[5])) == -1 && PyErr_Occurred())
        return NULL;
    if ((max_headers = PyLong_AsSsize_t(args[6])) == -1 && PyErr_Occurred())
        return NULL;
    const char *data = PyBytes_AS_STRING(args[0]);
    Py_ssize_t size = PyBytes_GET_SIZE(args[0]);
    if (offset < 0 || offset > size)
        Py_RETURN_NONE;
    const char *p = data + offset, *end = data + size;

    /* request-line = method SP origin-form SP HTTP/1.x CRLF */
    const char *s = p;
    while (s < end && *s >= 'A' && *s <= 'Z')
        s++;
    if (s >= end || *s != ' ')
        Py_RETURN_NONE;
    PyObject *method = known_method(p, s - p);
    if (method == NULL)
        Py_RETURN_NONE;
    const char *target = ++s;
    while (s < end && (cls[(unsigned char)*s] & C_TARGET))
        s++;
    Py_ssize_t target_len = s - target;
    if (target_len == 0 || *target != '/' || target_len > max_url || end - s < 11)
        Py_RETURN_NONE;
    if (memcmp(s, " HTTP/1.", 8) != 0 || (s[8] != '0' && s[8] != '1') || s[9] != '\r' || s[10] != '\n')
        Py_RETURN_NONE;
    int http10 = s[8] == '0';
    s += 11;

    Field fields[128];
    Py_ssize_t nfields = 0, header_bytes = 0;
    int hosts = 0, conn = CONN_NONE, conns = 0;
    const Field *host = NULL, *forwarded_for = NULL, *request_id = NULL;
    for (;;) {
        if (end - s >= 2 && s[0] == '\r' && s[1] == '\n') {
            s += 2;
            break;
        }
        if (nfields >= max_headers || nfields >= 128)
            Py_RETURN_NONE;
        Field *f = &fields[nfields];
        if (!scan_field(s, end, &s, f))
            Py_RETURN_NONE;
        header_bytes += f->name_len + f->value_len + 4;
        if (header_bytes > max_header_bytes || is_unhandled_name(f->name, f->name_len))
            Py_RETURN_NONE;
        nfields++;
        if (f->name_len == 4 && name_is(f->name, 4, "host")) {
            if (++hosts > 1 || !simple_host(f->value, f->value_len))
                Py_RETURN_NONE;
            host = f;
        } else if (f->name_len == 10 && name_is(f->name, 10, "connection")) {
            conn = connection_kind(f->value, f->value_len);
            if (conn < 0 || ++conns > 1)
                Py_RETURN_NONE;
        } else if (f->name_len == 12 && name_is(f->name, 12, "x-request-id")) {
            if (good_request_id(f->value, f->value_len))
                request_id = f;
        } else if (f->name_len == 15 && name_is(f->name, 15, "x-forwarded-for")) {
            if (trusted)
                forwarded_for = f;
        }
    }
    if (hosts == 0 && !http10)
        Py_RETURN_NONE;
    int keep_alive = http10 ? conn == CONN_KEEP_ALIVE : conn != CONN_CLOSE;

    /* The head to send upstream: what http.request_head builds for a request without a body. */
    Buf b;
    buf_init(&b);
    PyObject *headers = NULL, *rid = NULL, *head = NULL, *target_obj = NULL;
    PUT(&b, p, (target - p) + target_len);
    PUTS(&b, " HTTP/1.1\r\n");
    for (Py_ssize_t i = 0; i < nfields; i++) {
        const Field *f = &fields[i];
        Py_ssize_t n = f->name_len;
        if ((n == 10 && name_is(f->name, n, "connection")) || (n == 12 && name_is(f->name, n, "x-request-id")))
            continue;
        if (n >= 15 && n <= 17 &&
            (name_is(f->name, n, "x-forwarded-for") || name_is(f->name, n, "x-forwarded-proto") ||
             name_is(f->name, n, "x-forwarded-host"))) {
            if (!trusted || n == 15)
                continue;
        }
        PUT(&b, f->name, n);
        PUTS(&b, ": ");
        PUT(&b, f->value, f->value_len);
        PUTS(&b, "\r\n");
    }
    PUTS(&b, "x-forwarded-for: ");
    if (forwarded_for != NULL) {
        PUT(&b, forwarded_for->value, forwarded_for->value_len);
        PUTS(&b, ", ");
    }
    PUT(&b, PyBytes_AS_STRING(args[2]), PyBytes_GET_SIZE(args[2]));
    PUTS(&b, "\r\n");
    if (!trusted) {
        PUTS(&b, "x-forwarded-proto: http\r\n");
        if (host != NULL) {
            PUTS(&b, "x-forwarded-host: ");
            PUT(&b, host->value, host->value_len);
            PUTS(&b, "\r\n");
        }
    }
    rid = request_id != NULL ? PyBytes_FromStringAndSize(request_id->value, request_id->value_len)
                             : make_request_id();
    if (rid == NULL)
        goto error;
    PUTS(&b, "x-request-id: ");
    PUT(&b, PyBytes_AS_STRING(rid), PyBytes_GET_SIZE(rid));
    PUTS(&b, "\r\n\r\n");

    headers = PyList_New(nfields);
    if (headers == NULL)
        goto error;
    for (Py_ssize_t i = 0; i < nfields; i++) {
        PyObject *t = field_tuple(&fields[i]);
        if (t == NULL)
            goto error;
        PyList_SET_ITEM(headers, i, t);
    }
    target_obj = PyBytes_FromStringAndSize(target, target_len);
    head = PyBytes_FromStringAndSize(b.p, b.len);
    if (target_obj == NULL || head == NULL)
        goto error;
    buf_free(&b);
    PyObject *end_obj = PyLong_FromSsize_t(s - data);
    PyObject *result = end_obj != NULL ? PyTuple_New(8) : NULL;
    if (result == NULL) {
        Py_XDECREF(end_obj);
        Py_DECREF(headers);
        Py_DECREF(rid);
        Py_DECREF(head);
        Py_DECREF(target_obj);
        return NULL;
    }
    Py_INCREF(method);
    PyTuple_SET_ITEM(result, 0, end_obj);
    PyTuple_SET_ITEM(result, 1, method);
    PyTuple_SET_ITEM(result, 2, target_obj);
    PyTuple_SET_ITEM(result, 3, headers);
    PyTuple_SET_ITEM(result, 4, PyBool_FromLong(http10));
    PyTuple_SET_ITEM(result, 5, PyBool_FromLong(keep_alive));
    PyTuple_SET_ITEM(result, 6, head);
    PyTuple_SET_ITEM(result, 7, rid);
    return result;
error:
    buf_free(&b);
    Py_XDECREF(headers);
    Py_XDECREF(rid);
    Py_XDECREF(head);
    Py_XDECREF(target_obj);
    return NULL;
}

/* -- responses ---------------------------------------------------------------------------- */

static PyObject *py_scan_response(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyBytes_CheckExact(args[0])) {
        PyErr_SetString(PyExc_TypeError, "scan_response(data: bytes, offset: int)");
        return NULL;
    }
    Py_ssize_t offset = PyLong_AsSsize_t(args[1]);
    if (offset == -1 && PyErr_Occurred())
        return NULL;
    const char *data = PyBytes_AS_STRING(args[0]);
    Py_ssize_t size = PyBytes_GET_SIZE(args[0]);
    if (offset < 0 || offset > size)
        Py_RETURN_NONE;
    const char *p = data + offset, *end = data + size, *s = p;

    /* status-line = HTTP/1.x SP 3DIGIT SP reason CRLF; 2xx-5xx with a body (not 204, 304) */
    if (end - s < 13 || memcmp(s, "HTTP/1.", 7) != 0 || (s[7] != '0' && s[7] != '1') || s[8] != ' ')
        Py_RETURN_NONE;
    int http10 = s[7] == '0';
    int status = 0;
    for (int i = 9; i < 12; i++) {
        if (s[i] < '0' || s[i] > '9')
            Py_RETURN_NONE;
        status = status * 10 + (s[i] - '0');
    }
    if (status < 200 || status > 599 || status == 204 || status == 304 || s[12] != ' ')
        Py_RETURN_NONE;
    const char *reason = s + 13;
    s = reason;
    while (s < end && (cls[(unsigned char)*s] & C_VALUE))
        s++;
    if (end - s < 2 || s[0] != '\r' || s[1] != '\n')
        Py_RETURN_NONE;
    Py_ssize_t reason_len = s - reason;
    if (reason_len && (s[-1] == ' ' || s[-1] == '\t'))
        Py_RETURN_NONE;
    s += 2;

    Buf b;
    buf_init(&b);
    PUTS(&b, "HTTP/1.1 ");
    PUT(&b, p + 9, 3);
    PUTS(&b, " ");
    PUT(&b, reason, reason_len);
    PUTS(&b, "\r\n");
    long long length = -1;
    int conn = CONN_NONE, conns = 0, nfields = 0;
    for (;;) {
        if (end - s >= 2 && s[0] == '\r' && s[1] == '\n') {
            s += 2;
            break;
        }
        Field f;
        if (++nfields > 256 || !scan_field(s, end, &s, &f))
            goto none;
        Py_ssize_t n = f.name_len;
        if (n == 14 && name_is(f.name, n, "content-length")) {
            if (length >= 0 || f.value_len > 18)
                goto none;
            length = 0;
            for (Py_ssize_t i = 0; i < f.value_len; i++) {
                if (f.value[i] < '0' || f.value[i] > '9')
                    goto none;
                length = length * 10 + (f.value[i] - '0');
            }
        } else if (n == 10 && name_is(f.name, n, "connection")) {
            conn = connection_kind(f.value, f.value_len);
            if (conn < 0 || ++conns > 1)
                goto none;
            continue;
        } else if (is_unhandled_name(f.name, n)) {
            goto none;
        }
        PUT(&b, f.name, n);
        PUTS(&b, ": ");
        PUT(&b, f.value, f.value_len);
        PUTS(&b, "\r\n");
    }
    if (length < 0)
        goto none;
    int keep_alive = http10 ? conn == CONN_KEEP_ALIVE : conn != CONN_CLOSE;
    PyObject *head = PyBytes_FromStringAndSize(b.p, b.len);
    buf_free(&b);
    PyObject *end_obj = PyLong_FromSsize_t(s - data), *status_obj = PyLong_FromLong(status);
    PyObject *length_obj = PyLong_FromLongLong(length), *result = PyTuple_New(5);
    if (head == NULL || end_obj == NULL || status_obj == NULL || length_obj == NULL || result == NULL) {
        Py_XDECREF(head);
        Py_XDECREF(end_obj);
        Py_XDECREF(status_obj);
        Py_XDECREF(length_obj);
        Py_XDECREF(result);
        return NULL;
    }
    PyTuple_SET_ITEM(result, 0, end_obj);
    PyTuple_SET_ITEM(result, 1, status_obj);
    PyTuple_SET_ITEM(result, 2, head);
    PyTuple_SET_ITEM(result, 3, length_obj);
    PyTuple_SET_ITEM(result, 4, PyBool_FromLong(keep_alive));
    return result;
none:
    buf_free(&b);
    Py_RETURN_NONE;
error:
    buf_free(&b);
    return NULL;
}

static PyMethodDef methods[] = {
    {"scan_request", (PyCFunction)(void (*)(void))py_scan_request, METH_FASTCALL,
     "The parts of a complete, plain request head at offset, and the head to forward; or None."},
    {"scan_response", (PyCFunction)(void (*)(void))py_scan_response, METH_FASTCALL,
     "The parts of a complete, plain response head at offset, and the head to pass on; or None."},
    {"new_request_id", py_new_request_id, METH_NOARGS, "A new request id: the prefix and a counter."},
    {"set_request_id_prefix", py_set_request_id_prefix, METH_O, "Set the prefix of new request ids."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_wire",
    .m_doc = "One-call scanners for the common HTTP/1.1 heads.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__wire(void) {
    init_classes();
    for (int i = 0; i < 7; i++) {
        if (METHODS[i] == NULL) {
            METHODS[i] = PyBytes_FromString(METHOD_NAMES[i]);
            if (METHODS[i] == NULL)
                return NULL;
        }
    }
    return PyModule_Create(&module);
}
