import flor
from sklearn.model_selection import KFold
from sklearn.svm import SVC
from data import load_xy

X, y = load_xy()
C = flor.arg("C", 1.0)
kfold = KFold(n_splits=5, shuffle=True, random_state=0)

for fold, (tr, va) in flor.loop("fold", enumerate(kfold.split(X))):
    model = SVC(C=C, kernel="rbf")
    model.fit(X[tr], y[tr])
    acc = model.score(X[va], y[va])
    flor.log("score", acc)
    flor.log("n_support", int(model.n_support_.sum()))
