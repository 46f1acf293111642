"""Time Larq Compute Engine's interpreter on binary 3x3 convolutions (run by ``python -m bnhw.bench --only
lce`` inside bench/lce-venv, which has larq-compute-engine, larq and TensorFlow; never by the tests).

Usage: lce_bench.py OUT.json SIDE:C [SIDE:C ...]

Per shape two LCE models are converted with LCE's own converter (``convert_keras_model`` on larq
``QuantConv2D`` layers: ste_sign inputs and weights, same padding, no bias) and timed with LCE's
interpreter on one thread (median of repeated ``predict`` calls on one image):

* ``one``: float input -> LceQuantize -> LceBconv2d (float output)
* ``two``: the same, then a second identical binary conv; the first conv now writes a bit-packed
  output (its consumer binarises), so ``two - one`` estimates one bit-packed-in, bit-packed-out conv.
"""

import json
import sys
import time

import larq as lq
import larq_compute_engine as lce
import numpy as np
import tensorflow as tf
from larq_compute_engine.tflite.python.interpreter import Interpreter


def conv(c):
    return lq.layers.QuantConv2D(c, 3, padding="same", input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                                 kernel_constraint="weight_clip", use_bias=False)


def model(side, c, layers):
    x = tf.keras.Input((side, side, c))
    y = x
    for _ in range(layers):
        y = conv(c)(y)
    return tf.keras.Model(x, y)


def median_seconds(it, x, repeat):
    it.predict(x)
    it.predict(x)
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        it.predict(x)
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def main():
    out, shapes = sys.argv[1], sys.argv[2:]
    rows = []
    for s in shapes:
        side, c = (int(v) for v in s.split(":"))
        x = np.random.default_rng(0).standard_normal((1, side, side, c)).astype(np.float32)
        t = {}
        for name, n in (("one", 1), ("two", 2)):
            it = Interpreter(lce.convert_keras_model(model(side, c, n)), num_threads=1)
            t[name] = median_seconds(it, x, 30)
        rows.append({"shape": f"{side}x{side}x{c}", "lce_one_conv_seconds": t["one"],
                     "lce_two_conv_seconds": t["two"], "lce_packed_conv_seconds_est": t["two"] - t["one"]})
        print(f"LCE {side}x{side}x{c}: one conv {t['one'] * 1e3:.3f} ms, two {t['two'] * 1e3:.3f} ms", flush=True)
    with open(out, "w") as f:
        json.dump({"lce_version": lce.__version__, "tensorflow": tf.__version__, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
