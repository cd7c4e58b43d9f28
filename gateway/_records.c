/* The gateway's invocation record line in C: chutes.gateway._records.format_record.
 *
 * The same bytes as the pure-Python encode_record in chutes.gateway.metering (which calls this where it is
 * built): the record's JSON object and a newline, its numbers written from whole microseconds. bytes' %d
 * formatting goes through str for every number, which made the record a tenth of the gateway's CPU per call.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdio.h>
#include <string.h>

/* format_record(invocation_id, middle, status, duration_us, bytes_in, bytes_out, started_us) -> bytes | None
 * invocation_id: str. None when it is not plain ASCII letters and digits, or a number is not an int that
 * fits in 64 bits: the caller's pure-Python form writes those.
 * middle: the escaped text between the id and the status (",\"chute_id\":...,\"status\":"). Negative
 * durations and start times are written as 0. */
static PyObject *format_record(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError,
                        "format_record(invocation_id, middle, status, duration_us, bytes_in, bytes_out, started_us)");
        return NULL;
    }
    if (!PyUnicode_Check(args[0]) || !PyBytes_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "format_record: invocation_id must be str and middle bytes");
        return NULL;
    }
    PyObject *id = args[0];
    if (PyUnicode_READY(id) < 0) return NULL;
    if (!PyUnicode_IS_ASCII(id)) Py_RETURN_NONE;
    const char *id_chars = (const char *)PyUnicode_DATA(id);
    Py_ssize_t id_len = PyUnicode_GET_LENGTH(id);
    if (id_len == 0 || id_len > 256) Py_RETURN_NONE;
    for (Py_ssize_t i = 0; i < id_len; i++) {
        char c = id_chars[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))) Py_RETURN_NONE;
    }
    long long numbers[5];
    for (int i = 0; i < 5; i++) {
        numbers[i] = PyLong_AsLongLong(args[2 + i]);
        if (numbers[i] == -1 && PyErr_Occurred()) {
            if (!PyErr_ExceptionMatches(PyExc_OverflowError) && !PyErr_ExceptionMatches(PyExc_TypeError)) {
                return NULL;
            }
            PyErr_Clear(); /* beyond 64 bits, or not an int: the caller's form writes it as %d does */
            Py_RETURN_NONE;
        }
    }
    long long status = numbers[0], duration = numbers[1], bytes_in = numbers[2], bytes_out = numbers[3],
              started = numbers[4];
    if (duration < 0) duration = 0;
    if (started < 0) started = 0;
    char tail[200];
    int tail_len = snprintf(tail, sizeof tail,
                            "%lld,\"duration_ms\":%lld.%03lld,\"bytes_in\":%lld,\"bytes_out\":%lld,"
                            "\"started_at\":%lld.%06lld}\n",
                            status, duration / 1000, duration % 1000, bytes_in, bytes_out, started / 1000000,
                            started % 1000000);
    if (tail_len < 0 || tail_len >= (int)sizeof tail) {
        PyErr_SetString(PyExc_ValueError, "format_record: numbers too long");
        return NULL;
    }
    static const char head[] = "{\"invocation_id\":\"";
    Py_ssize_t head_len = (Py_ssize_t)sizeof head - 1;
    Py_ssize_t middle_len = PyBytes_GET_SIZE(args[1]);
    PyObject *out = PyBytes_FromStringAndSize(NULL, head_len + id_len + 1 + middle_len + tail_len);
    if (out == NULL) return NULL;
    char *p = PyBytes_AS_STRING(out);
    memcpy(p, head, (size_t)head_len);
    p += head_len;
    memcpy(p, id_chars, (size_t)id_len);
    p += id_len;
    *p++ = '"';
    memcpy(p, PyBytes_AS_STRING(args[1]), (size_t)middle_len);
    p += middle_len;
    memcpy(p, tail, (size_t)tail_len);
    return out;
}

static PyMethodDef methods[] = {
    {"format_record", (PyCFunction)(void (*)(void))format_record, METH_FASTCALL,
     "format_record(invocation_id, middle, status, duration_us, bytes_in, bytes_out, started_us) -> bytes | None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "chutes.gateway._records",
    "The gateway's invocation record line in C (see chutes.gateway.metering.encode_record).", -1, methods,
};

PyMODINIT_FUNC PyInit__records(void) { return PyModule_Create(&module); }
