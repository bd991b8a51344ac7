import flor
from sklearn.model_selection import KFold
from sklearn.svm import SVC
from data import load_xy

X, y = load_xy()
C = flor.arg("C", 1.0)
kfold = KFold(n_splits=5, shuffle=True, random_state=0)

for fold, (tr, va) in flor.loop("fold", enumerate(kfold.split(X))):
    clf = SVC(C=C)
    clf.fit(X[tr], y[tr])
    score = clf.score(X[va], y[va])
    flor.log("score", score)
    flor.log("n_support", int(clf.n_support_.sum()))
