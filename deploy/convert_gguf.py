"""Convert a GGUF checkpoint to a Hugging Face safetensors folder that vLLM loads.

Runs in the vLLM environment (it needs transformers and gguf), as a plain script:
``python deploy/convert_gguf.py MODEL.gguf OUT_DIR``. Writes to a temporary folder and
renames it into place, so an interrupted conversion never leaves a half-written model.
"""

import shutil
import sys
from pathlib import Path


def convert(gguf_path: Path, out_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    folder, name = str(gguf_path.parent), gguf_path.name
    print(f"loading {gguf_path} (dequantising; about a minute)", flush=True)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, torch_dtype="bfloat16")
    # The GGUF quantizer object is not serialisable and the weights are already dequantised.
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    print(f"writing safetensors to {out_dir}", flush=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: convert_gguf.py MODEL.gguf OUT_DIR")
    convert(Path(sys.argv[1]), Path(sys.argv[2]))
