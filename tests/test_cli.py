from tests.test_record import SMALL


def test_runs_show_query_and_errors(project):
    project.write("train.py", SMALL)
    project.run("train.py", "--kwargs", "epochs=2")
    runs = project.flor("runs").stdout.splitlines()
    assert runs[0].split()[:5] == ["tstamp", "status", "duration", "filename", "commit"]
    tstamp = runs[1].split()[0]
    assert "finished" in runs[1] and "epochs=2" in runs[1]
    show = project.flor("show", tstamp[:10]).stdout
    assert f"run       {tstamp}" in show and "loss" in show and "epochs=2" in show
    assert "checkpoints" in show
    query = project.flor("query", "SELECT name, COUNT(*) AS n FROM logs GROUP BY name ORDER BY name", "--csv").stdout
    assert query.splitlines() == ["name,n", "acc,2", "final,1", "loss,8"]
    table = project.flor("dataframe", "loss").stdout.splitlines()
    assert len(table) == 9 and table[0].split() == ["projid", "tstamp", "filename", "git_head", "git_dirty", "epoch", "step", "loss"]

    missing = project.flor("show", "1999", check=False)
    assert missing.returncode == 2 and missing.stderr.strip() == "flor: error: no run matches '1999'; `flor runs` lists them"
    write = project.flor("query", "DROP TABLE runs", check=False)
    assert write.returncode != 0 and len(write.stderr.strip().splitlines()) == 1


def test_no_project_is_one_line(tmp_path, project):
    done = project.flor("runs", check=False, cwd=tmp_path)
    assert done.returncode != 0
    assert done.stderr.strip().startswith("flor: error: no flor runs recorded under")
    assert "Traceback" not in done.stderr


def test_module_and_help(project):
    assert "dataframe" in project.flor("--help").stdout


def test_runs_show_and_dataframe_name_the_users_head(project):
    head = project.git("rev-parse", "HEAD").strip()
    project.write("train.py", SMALL)  # untracked: the run's code differs from HEAD
    project.run("train.py", "--kwargs", "epochs=1")
    runs = project.flor("runs").stdout.splitlines()
    assert runs[0].split()[5] == "git_head" and f"{head[:10]}+dirty" in runs[1]
    show = project.flor("show", runs[1].split()[0]).stdout
    assert f"git head  {head}  (with uncommitted or untracked changes)" in show
    frame = project.flor("dataframe", "final", "--csv").stdout.splitlines()
    assert frame[0].startswith("projid,tstamp,filename,git_head,git_dirty") and f",{head},True," in frame[1]


def test_version(project):
    assert project.flor("--version").stdout.strip() == "flor 0.1.0"
