"""Run by torchrun in tests: train from a YAML config, then dump this rank's full training state."""
import sys

import torch

from brivl.checkpoint import save_safetensors
from brivl.train import Trainer, TrainConfig

cfg = TrainConfig.load(sys.argv[1])
trainer = Trainer(cfg, resume="--resume" in sys.argv)
trainer.run(progress=False)
moco, rank = trainer.moco, trainer.rank

# One more step by hand: this rank's momentum keys must land where its positives are looked up.
keys = {}
moco.textencoder_mom.register_forward_hook(lambda m, i, o: keys.setdefault("txt", o.detach().clone()))
ptr = int(moco.queue_ptr)
pixels, texts = next(iter([(torch.rand(cfg.batch_size, 3, 64, 64, generator=torch.Generator().manual_seed(rank)),
                            [f"text {rank} {i}" for i in range(cfg.batch_size)])]))
tokens = trainer.model.tokenize(texts)
moco.eval()  # no batch-norm statistics from this extra step, which differs between ranks
with torch.no_grad():
    moco(pixels, tokens["input_ids"], tokens["attention_mask"])
own = ptr + rank * cfg.batch_size
own_keys_in_place = bool(torch.equal(moco.text_queue[:, own:own + cfg.batch_size], keys["txt"].T))

state = {k: v for k, v in moco.state_dict().items()}
save_safetensors(state, f"{cfg.output}/final-rank{rank}.safetensors",
                 metadata={"sampler": f"{trainer.sampler.state.epoch},{trainer.sampler.state.batch}",
                           "own_keys_in_place": str(own_keys_in_place)})
torch.distributed.barrier()
