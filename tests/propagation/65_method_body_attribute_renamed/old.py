import flor
import torch


class Classifier(torch.nn.Module):
    def __init__(self, hidden):
        super().__init__()
        self.layers = torch.nn.Sequential(torch.nn.Linear(784, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 10))

    def training_step(self, batch):
        x, y = batch
        out = self.layers(x.flatten(1))
        loss = torch.nn.functional.cross_entropy(out, y)
        return loss


clf = Classifier(flor.arg("hidden", 128))
opt = torch.optim.SGD(clf.parameters(), lr=0.1)
with flor.checkpointing(clf=clf, opt=opt):
    for epoch in flor.loop("epoch", range(5)):
        for batch in flor.loop("step", loader):
            loss = clf.training_step(batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
