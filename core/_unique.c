/* Random hex labels in C: chutes.core._unique.RandomHex (see chutes.core.unique for the pure-Python form).
 *
 * The operating system's random bytes (getrandom, what os.urandom reads) are fetched a page at a time and
 * handed out ``size`` bytes per label, each as 2*size lower-case hex digits: one system call per few hundred
 * labels, every label as unpredictable as os.urandom's. Bytes once handed out are never handed out again; a
 * child made by fork must call discard() (chutes.core.unique registers it with os.register_at_fork) so parent
 * and child never share the rest of a page. The GIL is held throughout: no two threads get the same bytes.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <string.h>
#include <sys/random.h>

typedef struct {
    PyObject_HEAD
    Py_ssize_t size; /* bytes per label */
    Py_ssize_t page; /* bytes fetched at once, a multiple of size */
    Py_ssize_t pos;  /* next unused byte of buf; page: none left */
    unsigned char *buf;
} RandomHex;

static const char HEX[] = "0123456789abcdef";

static int RandomHex_init(RandomHex *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"size", "page", NULL};
    Py_ssize_t size, page = 4096;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "n|n:RandomHex", kwlist, &size, &page)) return -1;
    if (size <= 0 || size > page || page > (1 << 20)) {
        PyErr_Format(PyExc_ValueError, "size must be between 1 and page (%zd), page at most 1 MiB", page);
        return -1;
    }
    page -= page % size;
    unsigned char *buf = PyMem_Malloc((size_t)page);
    if (buf == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    PyMem_Free(self->buf);
    self->buf = buf;
    self->size = size;
    self->page = page;
    self->pos = page;
    return 0;
}

static void RandomHex_dealloc(RandomHex *self) {
    if (self->buf != NULL) {
        memset(self->buf, 0, (size_t)self->page);
        PyMem_Free(self->buf);
    }
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* The next label's bytes, refilling the page when it is used up; NULL with OSError set on failure. */
static const unsigned char *next_label(RandomHex *self) {
    if (self->buf == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "RandomHex was not initialised");
        return NULL;
    }
    if (self->pos + self->size > self->page) {
        Py_ssize_t filled = 0;
        while (filled < self->page) {
            ssize_t got = getrandom(self->buf + filled, (size_t)(self->page - filled), 0);
            if (got < 0) {
                if (errno == EINTR) continue;
                self->pos = self->page;
                PyErr_SetFromErrno(PyExc_OSError);
                return NULL;
            }
            filled += got;
        }
        self->pos = 0;
    }
    const unsigned char *label = self->buf + self->pos;
    self->pos += self->size;
    return label;
}

static void to_hex(const unsigned char *in, Py_ssize_t n, char *out) {
    for (Py_ssize_t i = 0; i < n; i++) {
        out[2 * i] = HEX[in[i] >> 4];
        out[2 * i + 1] = HEX[in[i] & 0x0f];
    }
}

static PyObject *RandomHex_take_str(RandomHex *self, PyObject *Py_UNUSED(ignored)) {
    const unsigned char *label = next_label(self);
    if (label == NULL) return NULL;
    PyObject *out = PyUnicode_New(2 * self->size, 127);
    if (out == NULL) return NULL;
    to_hex(label, self->size, (char *)PyUnicode_1BYTE_DATA(out));
    return out;
}

static PyObject *RandomHex_take_bytes(RandomHex *self, PyObject *Py_UNUSED(ignored)) {
    const unsigned char *label = next_label(self);
    if (label == NULL) return NULL;
    PyObject *out = PyBytes_FromStringAndSize(NULL, 2 * self->size);
    if (out == NULL) return NULL;
    to_hex(label, self->size, PyBytes_AS_STRING(out));
    return out;
}

static PyObject *RandomHex_discard(RandomHex *self, PyObject *Py_UNUSED(ignored)) {
    self->pos = self->page;
    Py_RETURN_NONE;
}

static PyMethodDef RandomHex_methods[] = {
    {"take_str", (PyCFunction)RandomHex_take_str, METH_NOARGS, "The next label: 2*size hex digits, as str."},
    {"take_bytes", (PyCFunction)RandomHex_take_bytes, METH_NOARGS, "The next label: 2*size hex digits, as bytes."},
    {"discard", (PyCFunction)RandomHex_discard, METH_NOARGS,
     "Drop the rest of the page (a forked child must, so that it never hands out its parent's labels)."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject RandomHexType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "chutes.core._unique.RandomHex",
    .tp_basicsize = sizeof(RandomHex),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Random hex labels of size bytes from getrandom, fetched a page at a time.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)RandomHex_init,
    .tp_dealloc = (destructor)RandomHex_dealloc,
    .tp_methods = RandomHex_methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "chutes.core._unique", "Random hex labels in C (see chutes.core.unique).", -1, NULL,
};

PyMODINIT_FUNC PyInit__unique(void) {
    if (PyType_Ready(&RandomHexType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    Py_INCREF(&RandomHexType);
    if (PyModule_AddObject(m, "RandomHex", (PyObject *)&RandomHexType) < 0) {
        Py_DECREF(&RandomHexType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
