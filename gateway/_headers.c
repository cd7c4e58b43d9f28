/* Header hygiene of the gateway's per-call path in C: chutes.gateway._headers.
 *
 * The same bytes as upstream_request and client_response_head in chutes.gateway.headers, which call these
 * where this module is built and keep the rare cases themselves: a function here answers None when the
 * headers hold something it leaves to Python (an X-Forwarded-For to extend, a Connection header naming more
 * hop-by-hop fields, anything not a list of byte pairs), and the caller's Python form writes the answer.
 * Each builds its result in one allocation: sizes first, then copies.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdio.h>
#include <string.h>

static int is_pair(PyObject *item) {
    return PyTuple_CheckExact(item) && PyTuple_GET_SIZE(item) == 2 && PyBytes_CheckExact(PyTuple_GET_ITEM(item, 0)) &&
           PyBytes_CheckExact(PyTuple_GET_ITEM(item, 1));
}

static int bytes_is(PyObject *b, const char *text, Py_ssize_t len) {
    return PyBytes_GET_SIZE(b) == len && memcmp(PyBytes_AS_STRING(b), text, (size_t)len) == 0;
}

static char *put(char *p, const char *data, Py_ssize_t len) {
    memcpy(p, data, (size_t)len);
    return p + len;
}

static char *put_bytes(char *p, PyObject *b) { return put(p, PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b)); }

#define PUT_TEXT(p, text) put((p), (text), (Py_ssize_t)sizeof(text) - 1)

/* upstream_request(request_line, headers, drop, client_ip, host, scheme, invocation_id, signature, body)
 * -> bytes | None. headers: the client's (name, value) pairs, names lower-case; drop: the names not passed on;
 * client_ip: bytes or None. None: the headers hold X-Forwarded-For or Connection (or are not byte pairs). */
static PyObject *upstream_request(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 9) {
        PyErr_SetString(PyExc_TypeError, "upstream_request(request_line, headers, drop, client_ip, host, scheme, "
                                         "invocation_id, signature, body)");
        return NULL;
    }
    PyObject *line = args[0], *headers = args[1], *drop = args[2], *client_ip = args[3], *host = args[4];
    PyObject *scheme = args[5], *invocation_id = args[6], *signature = args[7], *body = args[8];
    if (!PyList_CheckExact(headers) || !PyAnySet_Check(drop)) Py_RETURN_NONE;
    if (!PyBytes_CheckExact(line) || !PyBytes_CheckExact(host) || !PyBytes_CheckExact(scheme) ||
        !PyBytes_CheckExact(invocation_id) || !PyBytes_CheckExact(signature) || !PyBytes_CheckExact(body) ||
        (client_ip != Py_None && !PyBytes_CheckExact(client_ip))) {
        PyErr_SetString(PyExc_TypeError, "upstream_request: every part must be bytes (client_ip: bytes or None)");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(headers);
    if (n > 4096) Py_RETURN_NONE;
    char keep[4096];
    Py_ssize_t size = PyBytes_GET_SIZE(line);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(headers, i);
        if (!is_pair(item)) Py_RETURN_NONE;
        PyObject *name = PyTuple_GET_ITEM(item, 0);
        if (bytes_is(name, "x-forwarded-for", 15) || bytes_is(name, "connection", 10)) Py_RETURN_NONE;
        int dropped = PySet_Contains(drop, name);
        if (dropped < 0) return NULL;
        keep[i] = (char)!dropped;
        if (!dropped) size += PyBytes_GET_SIZE(name) + 2 + PyBytes_GET_SIZE(PyTuple_GET_ITEM(item, 1)) + 2;
    }
    int has_ip = client_ip != Py_None && PyBytes_GET_SIZE(client_ip) > 0;
    if (has_ip) size += 17 + PyBytes_GET_SIZE(client_ip) + 2;
    if (PyBytes_GET_SIZE(host) > 0) size += 18 + PyBytes_GET_SIZE(host) + 2;
    char length[24];
    int length_len = snprintf(length, sizeof length, "%zd", PyBytes_GET_SIZE(body));
    size += 19 + PyBytes_GET_SIZE(scheme) + 2 + 24 + PyBytes_GET_SIZE(invocation_id) + 2 + 20 +
            PyBytes_GET_SIZE(signature) + 2 + 16 + length_len + 4 + PyBytes_GET_SIZE(body);
    PyObject *out = PyBytes_FromStringAndSize(NULL, size);
    if (out == NULL) return NULL;
    char *p = put_bytes(PyBytes_AS_STRING(out), line);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!keep[i]) continue;
        PyObject *item = PyList_GET_ITEM(headers, i);
        p = put_bytes(p, PyTuple_GET_ITEM(item, 0));
        p = PUT_TEXT(p, ": ");
        p = put_bytes(p, PyTuple_GET_ITEM(item, 1));
        p = PUT_TEXT(p, "\r\n");
    }
    if (has_ip) {
        p = PUT_TEXT(p, "x-forwarded-for: ");
        p = put_bytes(p, client_ip);
        p = PUT_TEXT(p, "\r\n");
    }
    if (PyBytes_GET_SIZE(host) > 0) {
        p = PUT_TEXT(p, "x-forwarded-host: ");
        p = put_bytes(p, host);
        p = PUT_TEXT(p, "\r\n");
    }
    p = PUT_TEXT(p, "x-forwarded-proto: ");
    p = put_bytes(p, scheme);
    p = PUT_TEXT(p, "\r\nx-chutes-invocation-id: ");
    p = put_bytes(p, invocation_id);
    p = PUT_TEXT(p, "\r\nx-chutes-signature: ");
    p = put_bytes(p, signature);
    p = PUT_TEXT(p, "\r\ncontent-length: ");
    p = put(p, length, length_len);
    p = PUT_TEXT(p, "\r\n\r\n");
    p = put_bytes(p, body);
    if (p != PyBytes_AS_STRING(out) + size) { /* a size miscounted above: never hand out such bytes */
        Py_DECREF(out);
        PyErr_SetString(PyExc_SystemError, "upstream_request: size mismatch");
        return NULL;
    }
    return out;
}

/* client_response_head(headers, drop, invocation_id) -> bytes | None. headers: the instance's (name, value)
 * pairs, names in any case (written lower-case); drop: lower-case names not passed on. None: a Connection
 * header (or pairs that are not bytes). */
static PyObject *client_response_head(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "client_response_head(headers, drop, invocation_id)");
        return NULL;
    }
    PyObject *headers = args[0], *drop = args[1], *invocation_id = args[2];
    if (!PyList_CheckExact(headers) || !PyAnySet_Check(drop)) Py_RETURN_NONE;
    if (!PyBytes_CheckExact(invocation_id)) {
        PyErr_SetString(PyExc_TypeError, "client_response_head: invocation_id must be bytes");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(headers);
    if (n > 4096) Py_RETURN_NONE;
    char keep[4096];
    Py_ssize_t size = 24 + PyBytes_GET_SIZE(invocation_id) + 2;
    char lower[64];
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(headers, i);
        if (!is_pair(item)) Py_RETURN_NONE;
        PyObject *name = PyTuple_GET_ITEM(item, 0);
        Py_ssize_t name_len = PyBytes_GET_SIZE(name);
        const char *chars = PyBytes_AS_STRING(name);
        int dropped;
        if (name_len <= (Py_ssize_t)sizeof lower) { /* every name in the drop set is shorter */
            int upper = 0;
            for (Py_ssize_t k = 0; k < name_len; k++) {
                char c = chars[k];
                if (c >= 'A' && c <= 'Z') {
                    upper = 1;
                    c = (char)(c + 32);
                }
                lower[k] = c;
            }
            if (name_len == 10 && memcmp(lower, "connection", 10) == 0) Py_RETURN_NONE;
            if (upper) {
                PyObject *folded = PyBytes_FromStringAndSize(lower, name_len);
                if (folded == NULL) return NULL;
                dropped = PySet_Contains(drop, folded);
                Py_DECREF(folded);
            } else {
                dropped = PySet_Contains(drop, name);
            }
            if (dropped < 0) return NULL;
        } else {
            dropped = 0;
        }
        keep[i] = (char)!dropped;
        if (!dropped) size += name_len + 2 + PyBytes_GET_SIZE(PyTuple_GET_ITEM(item, 1)) + 2;
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, size);
    if (out == NULL) return NULL;
    char *start = PyBytes_AS_STRING(out), *p = start;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!keep[i]) continue;
        PyObject *item = PyList_GET_ITEM(headers, i);
        PyObject *name = PyTuple_GET_ITEM(item, 0);
        const char *chars = PyBytes_AS_STRING(name);
        Py_ssize_t name_len = PyBytes_GET_SIZE(name);
        for (Py_ssize_t k = 0; k < name_len; k++) {
            char c = chars[k];
            *p++ = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
        }
        p = PUT_TEXT(p, ": ");
        p = put_bytes(p, PyTuple_GET_ITEM(item, 1));
        p = PUT_TEXT(p, "\r\n");
    }
    p = PUT_TEXT(p, "x-chutes-invocation-id: ");
    p = put_bytes(p, invocation_id);
    p = PUT_TEXT(p, "\r\n");
    if (p != start + size) {
        Py_DECREF(out);
        PyErr_SetString(PyExc_SystemError, "client_response_head: size mismatch");
        return NULL;
    }
    return out;
}

static PyMethodDef methods[] = {
    {"upstream_request", (PyCFunction)(void (*)(void))upstream_request, METH_FASTCALL,
     "upstream_request(request_line, headers, drop, client_ip, host, scheme, invocation_id, signature, body)"
     " -> bytes | None"},
    {"client_response_head", (PyCFunction)(void (*)(void))client_response_head, METH_FASTCALL,
     "client_response_head(headers, drop, invocation_id) -> bytes | None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "chutes.gateway._headers",
    "Header hygiene of the gateway's per-call path in C (see chutes.gateway.headers).", -1, methods,
};

PyMODINIT_FUNC PyInit__headers(void) { return PyModule_Create(&module); }
