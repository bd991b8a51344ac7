import flor
from envs import make_env
from agents import DQN

env = make_env("CartPole-v1")
agent = DQN(env.observation_space, env.action_space)

with flor.checkpointing(agent=agent):
    for episode in flor.loop("episode", range(flor.arg("episodes", 500))):
        obs = env.reset()
        done = False
        total = 0.0
        while not done:
            action = agent.act(obs)
            obs, reward, done, info = env.step(action)
            total += reward
            agent.observe(obs, reward, done)
        agent.learn()
        flor.log("return", total)
        flor.log("epsilon", agent.epsilon)
