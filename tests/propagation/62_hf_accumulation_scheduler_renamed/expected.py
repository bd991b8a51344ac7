import flor
import torch
from transformers import AutoModelForSequenceClassification, get_linear_schedule_with_warmup
from data import make_dataloaders

accum = flor.arg("grad_accum", 4)
model = AutoModelForSequenceClassification.from_pretrained("distilbert-base-uncased", num_labels=2)
train_dataloader, eval_dataloader = make_dataloaders(batch_size=16)
optimizer = torch.optim.AdamW(model.parameters(), lr=flor.arg("lr", 5e-5))
scheduler = get_linear_schedule_with_warmup(optimizer, 100, 1000)

with flor.checkpointing(model=model, optimizer=optimizer, lr_scheduler=scheduler):
    for epoch in flor.loop("epoch", range(flor.arg("epochs", 3))):
        model.train()
        for step, batch in flor.loop("step", enumerate(train_dataloader)):
            outputs = model(**batch)
            loss = outputs.loss / accum
            loss.backward()
            if (step + 1) % accum == 0:
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
                flor.log("lr", scheduler.get_last_lr()[0])
            flor.log("loss", loss.item())
