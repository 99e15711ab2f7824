"""Run by torchrun in tests: train from a YAML config, then dump this rank's full training state."""
import sys

import torch

from brivl.checkpoint import save_safetensors
from brivl.train import Trainer, TrainConfig

cfg = TrainConfig.load(sys.argv[1])
trainer = Trainer(cfg, resume="--resume" in sys.argv)
trainer.run(progress=False)
state = {k: v for k, v in trainer.moco.state_dict().items()}
save_safetensors(state, f"{cfg.output}/final-rank{trainer.rank}.safetensors",
                 metadata={"sampler": f"{trainer.sampler.state.epoch},{trainer.sampler.state.batch}"})
torch.distributed.barrier()
